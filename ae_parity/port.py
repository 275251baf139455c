"""Port a PyTorch autoencoder to Flax NNX automatically: trace it to a graph, build the NNX module, load
its weights.

``port(torch_model, x)`` traces ``torch_model`` on the example batch ``x`` (``ae_torch.graph.trace``:
``forward``, and ``encode`` / ``decode`` where it has them), builds the native NNX module of that graph
(``ae_jax.graph.build``) in the torch model's dtype and loads the torch model's ``state_dict`` into it
strictly: the same names, torch's values. Nothing is half-built: an unsupported construct raises one
``PortError`` listing all of them with their source lines before any module exists.
"""

from __future__ import annotations

import jax
from flax import nnx


def port(torch_model, *example, dtype: str | None = None, conv_form: str = "auto"):
    """The NNX port of ``torch_model`` (an ``ae_jax.graph.GraphModule``) with its weights, in its mode
    (train / eval) and dtype (or ``dtype``). ``example``: one batch per ``forward`` input (torch tensors).
    ``conv_form``: how its convolutions are computed (``ae_jax.convforms``; the default: as GEMMs on the
    CPU, the presets' own fast form)."""
    from ae_core import check_dtype
    from ae_jax.convforms import check_form, conv_forms
    from ae_jax.graph import GraphModule
    from ae_jax.numerics import jnp_dtype
    from ae_jax.weights import load_state_dict
    from ae_torch.trace import trace
    from ae_torch.weights import state_dict

    graph = trace(torch_model, *example)
    dt = jnp_dtype(check_dtype(dtype or graph.dtype))
    # weights come from torch: build the module abstractly (shapes only) and load them, rather than
    # drawing every layer's random initialisation only to overwrite it
    with conv_forms(check_form(conv_form)):
        model = nnx.eval_shape(lambda: GraphModule(graph, rngs=nnx.Rngs(0), dtype=dt))
    load_state_dict(model, state_dict(torch_model))  # strict: every variable gets the torch value
    if any(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(nnx.state(model))):
        raise RuntimeError(f"{graph.name}: a variable of the port has no value in the torch state dict")
    if torch_model.training:
        model.train()
    else:
        model.eval()
    return model




def load_source(path, class_name: str):
    """The class ``class_name`` of a generated port's source file, imported fresh from ``path``."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(f"_ae_parity_port_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return getattr(module, class_name)


def certificate(torch_model, x, *, make_flax, dtypes=("float64", "float32"), modes=("eval", "train")):
    """The parity certificate of a port: ``ae_parity.compare`` of the torch model and the port (``make_flax(
    dtype)`` -> an NNX model with the port's names; its weights are transferred by ``compare``) for every
    dtype and mode -- forward values, buffers, gradients and an optimizer step, float64 to 1e-10 relative
    and float32 against the float64 reference. Where the forward draws random numbers, both frameworks get
    the same supplied noise, the torch side running the graph (``ae_torch.graph``), which is first shown
    to BE the torch model (bitwise the same outputs under the same seed). Returns ``[(dtype, mode,
    Report)]`` and the notes."""
    import copy

    import numpy as np
    import torch

    from ae_core.noise import batch_noise
    from ae_torch.graph import build
    from ae_torch.trace import trace

    from .compare import compare
    from .trace import is_array, leaves

    graph = trace(torch_model, torch.as_tensor(x).to(next(torch_model.parameters()).dtype))
    noise_shapes = graph.noise_shapes()
    notes, out = [], []
    for dtype in dtypes:
        tdt = {"float32": torch.float32, "float64": torch.float64}[dtype]
        tm = copy.deepcopy(torch_model).to(tdt)
        noise = None
        if noise_shapes:
            runtime = build(graph, dtype=dtype)
            runtime.load_state_dict(tm.state_dict(), strict=True)
            for mode in modes:
                tm.train(mode == "train"), runtime.train(mode == "train")
                with torch.random.fork_rng(devices=[]), torch.no_grad():
                    torch.manual_seed(0)
                    a = leaves(tm(torch.from_numpy(np.asarray(x, dtype))), is_array)
                    torch.manual_seed(0)
                    b = leaves(runtime(torch.from_numpy(np.asarray(x, dtype))), is_array)
                if not all(torch.equal(u, v) for (_, u), (_, v) in zip(a, b)):
                    raise AssertionError(f"{graph.name}: the traced graph does not reproduce the torch model in {mode} "
                                         f"mode ({dtype}): please report this model")
            notes.append(f"{dtype}: the forward draws {', '.join(noise_shapes)}; the traced graph run by torch gives "
                         f"the model's own outputs bitwise under the same seed, and is compared with the same noise "
                         f"on both sides")
            noise = batch_noise(graph, 0, len(x), "float64")  # the draws both frameworks get, ae_core.noise's
            tm = runtime
        for mode in modes:
            report = compare(tm, make_flax(dtype), np.asarray(x, dtype), dtype=dtype, mode=mode,
                             forward_kwargs={"noise": noise} if noise else None)
            out.append((dtype, mode, report))
    return out, notes


def certificate_table(rows, notes=()) -> str:
    """One line per (dtype, mode): the verdict, how close, and the first divergence."""
    lines = [f"{'dtype':<8} {'mode':<6} {'rows':>5} {'worst':>26}  verdict"]
    for dtype, mode, report in rows:
        vals = [e for e in report.entries if e.kind != "check"]
        if dtype == "float64":
            worst = f"max rel {max((e.max_rel for e in vals), default=0):.1e}"
        else:
            ratios = [e.jax_err / e.torch_err for e in vals if e.kind == "ref" and e.torch_err]
            worst = f"jax/torch err <= {max(ratios, default=0):.2f}x"
        verdict = "agrees" if report.ok else f"DIVERGES at {report.first.stage} {report.first.name}"
        lines.append(f"{dtype:<8} {mode:<6} {len(vals):>5} {worst:>26}  {verdict}")
    return "\n".join(lines + [f"note: {n}" for n in notes])


__all__ = ["certificate", "certificate_table", "load_source", "port"]
