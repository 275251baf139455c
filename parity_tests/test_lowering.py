"""The presets are graphs: every spec is built and run as its model graph (ae_core.lowering), the one
way every model -- preset, hand-written spec, ported torch model -- is built."""

import numpy as np
import pytest
import torch
from torch import nn

import ae_jax
import ae_torch
from ae_core import PRESETS, Activation, Linear, ModelSpec, SpecError, get_spec, init_state_dict, model_inputs
from ae_core.graph import Graph
from ae_core.noise import batch_noise
from ae_jax.graph import GraphModule as JaxGraphModule
from ae_torch.graph import GraphModule as TorchGraphModule
from ae_torch.trace import trace

from tutorial_models import TUTORIAL

pytestmark = pytest.mark.usefixtures("strict_promotion")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_preset_is_its_graph(preset):
    """The graph holds the spec's state under the spec's names, draws the spec's noise, survives JSON; both
    frameworks' models are graph modules of it."""
    spec = get_spec(preset)
    graph = spec.to_graph()
    assert graph.state_shapes() == spec.state_shapes()
    assert graph.int_keys() == spec.int_keys()
    assert graph.noise_shapes() == spec.noise_shapes()
    assert Graph.from_json(graph.to_json()) == graph
    want, got = init_state_dict(spec, 3, "float64"), init_state_dict(graph, 3, "float64")  # same draws, same order
    assert list(got) == list(want) and all(np.array_equal(got[k], want[k]) for k in want)
    tm, jm = ae_torch.build(spec, seed=0), ae_jax.build(spec, seed=0)
    assert isinstance(tm, TorchGraphModule) and isinstance(jm, JaxGraphModule)
    assert tm.graph == graph and jm.graph == graph


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_the_graph_of_a_preset_builds_and_runs_as_any_graph(preset, train):
    """``build(spec.to_graph())`` is the preset's model: the same state-dict names, the same outputs in train
    mode with the same noise, in each framework and across them (float64)."""
    spec = get_spec(preset)
    graph = spec.to_graph()
    x = model_inputs(spec, train.images[:8], "float64")
    noise = batch_noise(spec, 1, 8, "float64")
    outs = []
    for model in (ae_torch.build(graph, dtype="float64", seed=4), ae_torch.build(spec, dtype="float64", seed=4)):
        model.train()
        outs.append(model.run("forward", torch.from_numpy(x), noise={k: torch.from_numpy(v) for k, v in noise.items()})
                    .detach().numpy())
    for model in (ae_jax.build(graph, dtype="float64", seed=4), ae_jax.build(spec, dtype="float64", seed=4)):
        model.train()
        outs.append(np.asarray(model.run("forward", x, noise=noise)))
    np.testing.assert_array_equal(outs[0], outs[1])
    np.testing.assert_array_equal(outs[2], outs[3])
    np.testing.assert_allclose(outs[2], outs[0], rtol=0, atol=1e-13)


def test_the_tutorial_tree_is_kept():
    """Sequentials where the tutorials have them: ``model.decoder[-1]`` is the final Sigmoid."""
    model = ae_torch.build("conv_bn")
    assert isinstance(model.encoder, nn.Sequential) and isinstance(model.decoder[-1], nn.Sigmoid)
    assert [type(m).__name__ for m in model.encoder] == [type(m).__name__ for m in TUTORIAL["conv_bn"]().encoder]


def test_the_vae_preset_is_pytorch_examples_vae():
    """Its module tree is vae/main.py's (fc1, fc21, fc22, fc3, fc4, functional ReLUs), traced from that code
    the same modules and state; its saved weights load strictly and give the same eval-mode outputs."""
    model, published = ae_torch.build("vae", dtype="float64"), TUTORIAL["vae"]().double().eval()
    assert [n for n, _ in model.named_children()] == ["fc1", "fc21", "fc22", "fc3", "fc4"]
    traced = trace(published, torch.zeros(2, 784, dtype=torch.float64))
    assert dict(traced.modules) == dict(get_spec("vae").to_graph().modules)
    model.load_state_dict(published.state_dict(), strict=True)
    x = torch.rand(5, 784, dtype=torch.float64)
    with torch.no_grad():
        np.testing.assert_array_equal(model.eval()(x).numpy(), published(x).numpy())
        mu, logvar = published.encode(x)
        out = model.outputs(x)
        np.testing.assert_array_equal(out["mu"].numpy(), mu.numpy())
        np.testing.assert_array_equal(out["logvar"].numpy(), logvar.numpy())


def test_named_modules_make_the_layers_without_state_functional():
    """A spec with module names is written as such code writes it: named layers, ops between them."""
    spec = ModelSpec("named", encoder=(Linear(784, 32), Activation("relu"), Linear(32, 8)),
                     decoder=(Linear(8, 784), Activation("sigmoid")),
                     names={"encoder.0": "enc.fc", "encoder.2": "code", "decoder.0": "out"})
    assert list(spec.state_shapes()) == ["enc.fc.weight", "enc.fc.bias", "code.weight", "code.bias", "out.weight",
                                         "out.bias"]
    graph = spec.to_graph()
    assert list(graph.modules) == ["enc.fc", "code", "out"]
    assert [n.op for n in graph.methods["forward"].nodes] == ["module", "relu", "module", "module", "sigmoid"]
    assert ModelSpec.from_json(spec.to_json()) == spec and spec.to_json() != spec_without_names(spec).to_json()
    tm, jm = ae_torch.build(spec, seed=2), ae_jax.build(spec, seed=2)
    assert set(ae_jax.state_dict(jm)) == set(tm.state_dict()) == set(spec.state_shapes())


def spec_without_names(spec: ModelSpec) -> ModelSpec:
    return ModelSpec(spec.name, spec.encoder, spec.decoder, spec.input, spec.description, spec.corrupt)


@pytest.mark.parametrize("names, message", [
    ({"encoder.1": "act"}, "not a layer with state"),
    ({"encoder.5": "x"}, "not a layer with state"),
    ({"encoder.0": "1fc"}, "is not a module name"),
    ({"encoder.0": "decoder.fc"}, "is not a module name"),
    ({"encoder.0": "fc", "decoder.0": "fc"}, "given twice or holds another"),
    ({"encoder.0": "fc", "decoder.0": "fc.out"}, "given twice or holds another"),
])
def test_bad_module_names_are_refused(names, message):
    with pytest.raises(SpecError, match=message):
        ModelSpec("bad", encoder=(Linear(784, 8), Activation("relu")), decoder=(Linear(8, 784),), names=names)


def test_named_modules_with_every_functional_layer_run_in_both_frameworks():
    """The layers without state of a named conv model -- gelu, Flatten, Unflatten, Dropout -- as ops, with
    torch's defaults filled in: float64 train-mode outputs agree with the same noise."""
    from ae_core import Conv2d, ConvTranspose2d, Dropout, Flatten, Unflatten

    spec = ModelSpec("named_conv", input="mnist_image",
                     encoder=(Conv2d(1, 4, 3, stride=2, padding=1), Activation("gelu"), Flatten(), Dropout(0.25),
                              Linear(4 * 14 * 14, 6)),
                     decoder=(Linear(6, 4 * 14 * 14), Activation("tanh"), Unflatten((4, 14, 14)),
                              ConvTranspose2d(4, 1, 3, stride=2, padding=1, output_padding=1), Activation("sigmoid")),
                     names={"encoder.0": "conv", "encoder.4": "mu", "decoder.0": "fc", "decoder.3": "deconv"})
    assert [n.op for n in spec.to_graph().methods["forward"].nodes] == [
        "module", "gelu", "flatten", "dropout", "module", "module", "tanh", "unflatten", "module", "sigmoid"]
    x = np.random.default_rng(0).random((3, 1, 28, 28))
    noise = batch_noise(spec, 0, 3, "float64")
    tm, jm = ae_torch.build(spec, seed=1, dtype="float64").train(), ae_jax.build(spec, seed=1, dtype="float64")
    jm.train()
    want = tm(torch.from_numpy(x), {k: torch.from_numpy(v) for k, v in noise.items()}).detach().numpy()
    np.testing.assert_allclose(np.asarray(jm(x, noise)), want, rtol=0, atol=1e-13)


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_a_preset_trained_as_its_graph_is_the_preset_trained(framework, train):
    """The graph file of a preset (``spec.to_graph().to_json()``, as ``train --graph`` reads it) trains as the
    preset does: the same initial weights, batches and noise, the BCE-from-logits loss found on its final
    ``nn.Sigmoid`` module -- float64, one epoch: the same step losses and weights to 1e-12."""
    from ae_core.optim import OptimizerConfig
    from ae_core.training import TrainConfig
    from ae_parity.runner import Data, make_trainer

    spec = get_spec("conv_bn")
    x = model_inputs(spec, train.images[:100], "float64")
    config = TrainConfig(epochs=1, batch_size=25, optimizer=OptimizerConfig("adam", lr=1e-3), dtype="float64",
                         seed=3, loss="bce")
    runs = []
    for model in (spec, Graph.from_json(spec.to_graph().to_json())):
        trainer = make_trainer(framework, model, config, Data(x, x[:50], "sample"))
        runs.append((trainer.train_epoch(0), trainer.model_state()))
    (losses_a, state_a), (losses_b, state_b) = runs
    np.testing.assert_allclose(losses_b, losses_a, rtol=1e-12, atol=0)
    assert set(state_a) == set(state_b)
    for k in state_a:
        np.testing.assert_allclose(state_b[k], state_a[k], rtol=0, atol=1e-12, err_msg=k)
