"""The structure the next features build on (issue 13): one registry entry per layer kind, the torch/JAX
mirror, one Trainer protocol, no import circles, small files and functions, numerics only through contexts."""

from __future__ import annotations

import ast
import inspect
import pathlib

import numpy as np
import pytest
import torch

import ae_jax.layers
import ae_torch.layers
from ae_core import LAYER_KINDS, Trainer, get_spec, init_state_dict
from ae_core.layers import Linear, layer_kind
from ae_core.layers.registry import no_state
from ae_jax.convert import expected_shapes
from ae_jax.weights import load_state_dict as jax_load, state_dict as jax_state
from ae_torch.weights import load_state_dict as torch_load, state_dict as torch_state

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("ae_core", "ae_torch", "ae_jax", "ae_parity")
KINDS = sorted(LAYER_KINDS)


def _example(kind: str):
    return LAYER_KINDS[kind].example_layer()


@pytest.mark.parametrize("kind", KINDS)
def test_every_layer_kind_has_all_its_parts(kind):
    """Spec class, torch builder, NNX builder, conversion rule, init rule and hint, and they agree: the init
    rule's state loads into both built modules, and both give it back bit for bit in canonical form."""
    entry = LAYER_KINDS[kind]
    layer = _example(kind)
    assert type(layer) is entry.spec and layer.kind == kind
    assert entry.hints and all(isinstance(t, str) and len(t) > 20 for t in entry.hints.values())
    assert entry.spec in ae_torch.layers.BUILDERS, f"ae_torch has no builder for {kind}"
    assert entry.spec in ae_jax.layers.BUILDERS, f"ae_jax has no builder for {kind}"
    values = entry.init(layer, np.random.default_rng(0), "float64")
    assert {k: v.shape for k, v in values.items()} == layer.state_shapes()
    assert ("noise" in layer.inputs) == (layer.noise((3, 3, 3) if kind == "dropout" else (2,)) is not None)

    tm = ae_torch.layers.make_layer(layer).to(torch.float64)
    if "tied_weight" not in layer.inputs:  # a tied layer's weight lives in its source layer
        assert {k: tuple(v.shape) for k, v in tm.state_dict().items()} == layer.state_shapes()
    torch_load(tm, values)
    jm = ae_jax.layers.make_layer(layer, rngs=__import__("flax").nnx.Rngs(0), dtype=ae_jax.jnp_dtype("float64"))
    if not layer.state_shapes():
        return  # parameter-free: nothing to convert
    assert expected_shapes(jm) == layer.state_shapes()  # the conversion rule covers every tensor
    jax_load(jm, values)
    for name, value in values.items():
        np.testing.assert_array_equal(jax_state(jm)[name], value, err_msg=name)
        np.testing.assert_array_equal(torch_state(tm)[name], value, err_msg=name)


def test_the_builders_cover_exactly_the_registered_kinds():
    specs = {entry.spec for entry in LAYER_KINDS.values()}
    assert set(ae_torch.layers.BUILDERS) == specs
    assert set(ae_jax.layers.BUILDERS) == specs


def test_a_kind_cannot_be_registered_twice():
    with pytest.raises(TypeError, match="registered twice"):
        layer_kind(init=no_state, hints={"Linear": "x"})(Linear)
    assert LAYER_KINDS["linear"].spec is Linear


def test_init_state_dict_is_the_registered_rules():
    """The model's initial state is each layer's init rule in execution order, from one generator."""
    spec = get_spec("conv_bn")
    sd = init_state_dict(spec, 5, "float64")
    assert {k: v.shape for k, v in sd.items()} == spec.state_shapes()
    assert sd["encoder.1.running_var"].tolist() == [1.0] * 16  # BatchNorm rule, not the uniform one
    bound = 1 / np.sqrt(1 * 3 * 3)
    assert 0.5 * bound < np.abs(sd["encoder.0.weight"]).max() <= bound  # torch's U(-1/sqrt(fan_in), ...)


# ----------------------------------------------------------------------------------- the mirror ----
MIRRORED = {
    "layers": ["BUILDERS", "builds", "make_layer"],
    "models": ["Autoencoder", "build"],
    "weights": ["state_dict", "load_state_dict", "save_weights", "load_weights", "model_dtype", "expected_shapes",
                "int_keys", "param_names"],
    "data": ["mnist_inputs"],
    "losses": ["LOSSES", "GRAPH_LOSSES", "mse", "bce", "vae", "vae_terms", "graph_mse", "graph_bce"],
    "optim": ["make_optimizer", "optimizer_state", "load_optimizer_state"],
    "train": ["Trainer", "loss_and_grad", "build_model"],
    "numerics": [],
    "graph": ["GraphModule", "OPS", "build"],
}


@pytest.mark.parametrize("module", sorted(MIRRORED))
def test_torch_and_jax_mirror_each_other(module):
    import importlib

    t = importlib.import_module(f"ae_torch.{module}")
    j = importlib.import_module(f"ae_jax.{module}")
    for name in MIRRORED[module]:
        assert hasattr(t, name) and hasattr(j, name), f"{module}.{name}"


def test_both_trainers_are_the_core_trainer_protocol(train):
    from ae_core.training import TrainConfig
    from ae_parity.runner import Data, make_trainer

    x = np.asarray(train.images[:64].reshape(64, -1) / 255.0)
    data = Data(x, x, "sample")
    members = [n for n in dir(Trainer) if not n.startswith("_")] + list(Trainer.__annotations__)
    for framework in ("torch", "jax"):
        trainer = make_trainer(framework, "mlp16", TrainConfig(epochs=1, batch_size=32), data)
        assert isinstance(trainer, Trainer), framework
        for name in members:
            assert hasattr(trainer, name), (framework, name)
        for name in ("epoch_inputs", "train_epoch", "load_state"):
            expected = list(inspect.signature(getattr(Trainer, name)).parameters)[1:]
            assert list(inspect.signature(getattr(trainer, name)).parameters)[:len(expected)] == expected
        idx, noise = trainer.epoch_inputs(0)
        assert idx.shape == (2, 32) and noise == {}
        assert trainer.train_epoch(0).shape == (2,) and trainer.step == 2


def test_loss_and_grad_return_the_same_kind_of_thing(train):
    import jax.numpy as jnp

    import ae_jax
    import ae_torch
    from ae_jax.train import loss_and_grad as jax_lg
    from ae_torch.train import loss_and_grad as torch_lg

    x = np.asarray(train.images[:8].reshape(8, -1) / 255.0)
    lt, gt = torch_lg(ae_torch.build("mlp16", dtype="float64", seed=1), torch.from_numpy(x))
    lj, gj = jax_lg(ae_jax.build("mlp16", dtype="float64", seed=1), jnp.asarray(x))
    assert type(lt) is type(lj) is float
    assert sorted(gt) == sorted(gj) and all(type(v) is np.ndarray for v in (*gt.values(), *gj.values()))
    assert all(gt[k].shape == gj[k].shape for k in gt)
    assert abs(lt - lj) <= 1e-12 * abs(lt)


# -------------------------------------------------------------------------------- code structure ----
def _sources():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, path.read_text()


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _top_level_imports(path: pathlib.Path, text: str) -> set[str]:
    """Our modules imported at module level (imports inside functions are deliberate late imports)."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out = set()
    for node in ast.parse(text).body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in out if m.split(".")[0] in PACKAGES and m != me}


def test_no_import_circles():
    """The module-level import graph of the four packages is acyclic (ae_jax.convert and ae_jax.models used
    to import each other)."""
    modules = {_module_name(p): _top_level_imports(p, t) for p, t in _sources()}
    graph = {m: sorted(d for d in deps if d in modules) for m, deps in modules.items()}
    state: dict[str, str] = {}

    def visit(node, path):
        state[node] = "open"
        for dep in graph[node]:
            if state.get(dep) == "open":
                pytest.fail("import circle: " + " -> ".join(path[path.index(dep):] + [dep]))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert graph["ae_jax.models"] and "ae_jax.models" not in graph["ae_jax.convert"]


def test_files_and_functions_stay_small():
    for path, text in _sources():
        assert len(text.splitlines()) <= 460, f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 80, f"{path.relative_to(ROOT)}:{node.lineno} {node.name} is {length} lines"


def test_no_process_wide_numerics_switches_outside_numerics():
    """Matmul precision and TF32 only through context managers; x64 switched in ae_jax/numerics.py alone."""
    for path, text in _sources():
        rel = str(path.relative_to(ROOT))
        if rel != "ae_jax/numerics.py":
            assert "jax.config.update" not in text, rel
        if rel != "ae_torch/numerics.py":
            assert "allow_tf32 =" not in text, rel


def test_no_private_attributes_across_modules():
    """Tests, bench and the CLI use public APIs: no jitted function internals, no JAX private counters."""
    for path in [*ROOT.joinpath("parity_tests").glob("*.py"), *(p for p, _ in _sources())]:
        text = path.read_text()
        if path.name == "test_architecture.py":
            continue
        for private in ("._cache_size(", "._epoch_fn", "._step_fn", "._put(", "convert._torch_path"):
            if private in text:
                assert path.name in ("train.py", "sweep.py") and path.parent.name == "ae_jax", (path, private)


NEW_KIND = '''
import functools
from dataclasses import dataclass

import jax
import numpy as np
import torch
from torch import nn

from ae_core import ModelSpec, layers as L
from ae_core.layers import LayerSpec, layer_kind
from ae_core.layers.registry import no_state, positive_number
import ae_jax, ae_torch
from ae_jax.layers import builds as jax_builds
from ae_torch.layers import builds as torch_builds


# --- the whole diff of docs/architecture.md, one registration per package ---
@layer_kind(init=no_state, example=dict(alpha=0.5),
            hints={"ELU": "ELU: alpha is the value for x -> -inf; jax.nn.elu(x, alpha) is torch's nn.ELU(alpha)"})
@dataclass(frozen=True)
class ELU(LayerSpec):
    alpha: float = 1.0
    kind = "elu"

    def __post_init__(self) -> None:
        positive_number(self, "alpha")


@torch_builds(ELU)
def _torch_elu(l):
    return nn.ELU(l.alpha)


@jax_builds(ELU)
def _jax_elu(l, *, rngs, dtype):
    return functools.partial(jax.nn.elu, alpha=l.alpha)
# ---

spec = ModelSpec("elu_ae", encoder=(L.Linear(784, 32), ELU(0.5), L.Linear(32, 8)),
                 decoder=(L.Linear(8, 32), ELU(0.5), L.Linear(32, 784), L.Activation("sigmoid")))
assert ModelSpec.from_json(spec.to_json()) == spec and "(elu" in spec.describe("encoder")
x = np.random.default_rng(0).uniform(size=(16, 784))
tm, jm = ae_torch.build(spec, dtype="float64", seed=0), ae_jax.build(spec, dtype="float64", seed=0)
from ae_torch.train import loss_and_grad as tlg
from ae_jax.train import loss_and_grad as jlg
lt, gt = tlg(tm, torch.from_numpy(x))
lj, gj = jlg(jm, jax.numpy.asarray(x))
rec = np.abs(np.asarray(jm(x)) - tm(torch.from_numpy(x)).detach().numpy()).max()
grad = max(np.abs(gj[k] - gt[k]).max() / np.abs(gt[k]).max() for k in gt)
assert rec <= 1e-12 and abs(lt - lj) <= 1e-12 * lt and grad <= 1e-12, (rec, grad)
from ae_parity.compare import hints
assert "ELU" in hints()
print("ok", rec, grad)
'''


def test_a_new_layer_kind_is_one_registration_per_framework():
    """docs/architecture.md's worked example, run as written (in a subprocess: the registry stays clean)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", NEW_KIND], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stderr[-3000:]
