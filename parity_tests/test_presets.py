"""Presets: the tutorials' architectures and names, loadable strictly in both frameworks."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import ae_jax
import ae_torch
from ae_core import (PRESETS, Activation, Conv2d, ConvTranspose2d, Flatten, Linear, ModelSpec, SpecError, Unflatten,
                     get_spec, model_inputs)
from ae_jax.train import encode_decode

from tutorial_models import TUTORIAL

pytestmark = pytest.mark.usefixtures("strict_promotion")


def test_every_preset_has_a_hand_written_tutorial_twin():
    assert sorted(TUTORIAL) == sorted(PRESETS)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_tutorial_state_dict_loads_strictly_in_both_frameworks(preset, train):
    """Compared in eval mode: dropout, corruption and VAE sampling are off, BatchNorm uses the running
    statistics -- set here to non-trivial values, as after training, so the test sees them used."""
    torch.manual_seed(0)
    tutorial = TUTORIAL[preset]().double().eval()
    with torch.no_grad():
        for name, buf in tutorial.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0.0, 0.3)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
            elif name.endswith("num_batches_tracked"):
                buf.fill_(7)
    sd = tutorial.state_dict()

    tm = ae_torch.build(preset, dtype="float64").eval()
    tm.load_state_dict(sd, strict=True)  # torch's own strict loader
    jm = ae_jax.build(preset, dtype="float64")
    jm.eval()
    ae_jax.load_state_dict(jm, sd, strict=True)
    assert {k: v.dtype for k, v in ae_jax.state_dict(jm).items()} == {k: v.numpy().dtype for k, v in sd.items()}

    x = model_inputs(get_spec(preset), train.images[:16], "float64")
    with torch.no_grad():
        expected = tutorial(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(tm(torch.from_numpy(x)).numpy(), expected, rtol=0, atol=1e-15)
    _, got = encode_decode(jm, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got), expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_spec_shapes_are_torch_state_dict_shapes(preset):
    tutorial, spec = TUTORIAL[preset](), get_spec(preset)
    assert list(spec.state_shapes().items()) == [(k, tuple(v.shape)) for k, v in tutorial.state_dict().items()]
    assert spec.param_shapes() == {k: tuple(v.shape) for k, v in tutorial.named_parameters()}
    assert spec.int_keys() == {k for k, v in tutorial.state_dict().items() if not v.is_floating_point()}


def test_spec_json_round_trip():
    for spec in PRESETS.values():
        assert ModelSpec.from_json(spec.to_json()) == spec


def test_a_user_spec_builds_in_both_frameworks():
    spec = ModelSpec("tiny", encoder=(Linear(784, 8), Activation("gelu")), decoder=(Linear(8, 784),))
    tm, jm = ae_torch.build(spec, seed=3), ae_jax.build(spec, seed=3)
    assert set(ae_jax.state_dict(jm)) == set(tm.state_dict()) == {"encoder.0.weight", "encoder.0.bias",
                                                                  "decoder.0.weight", "decoder.0.bias"}


@pytest.mark.parametrize("make, message", [
    (lambda: ModelSpec("bad", encoder=(Linear(784, 10),), decoder=(Linear(12, 784),)), "decoder[0]"),
    (lambda: ModelSpec("bad", encoder=(Linear(784, 10),), decoder=(Linear(10, 783),)), "decoder produces shape"),
    (lambda: Activation("swish"), "unknown activation 'swish'"),
    (lambda: Linear(0, 3), "Linear.in_features must be a positive int"),
    (lambda: ModelSpec("bad", encoder=(), decoder=(Linear(10, 784),)), "at least one layer"),
    (lambda: ModelSpec("bad", encoder=(Linear(784, 9),), decoder=(Linear(9, 784),), input="audio"),
     "unknown input kind"),
    (lambda: get_spec("mlp10"), "unknown preset 'mlp10'"),
    (lambda: ConvTranspose2d(4, 2, 3, stride=2, output_padding=2), "output_padding must be smaller than stride"),
    (lambda: Conv2d(1, 4, 0), "Conv2d.kernel_size must be an int >= 1"),
    (lambda: ModelSpec("bad", encoder=(Conv2d(3, 4, 3),), decoder=(Linear(4, 784),), input="mnist_image"),
     "expected (3, H, W)"),
    (lambda: ModelSpec("bad", encoder=(Conv2d(1, 4, 3, stride=2, padding=1), Flatten()),
                       decoder=(Unflatten((4, 14, 14)), ConvTranspose2d(4, 1, 3, stride=2, padding=1)),
                       input="mnist_image"), "decoder produces shape (1, 27, 27)"),
    (lambda: ae_torch.build("mlp9", dtype="float16"), "unsupported dtype"),
    (lambda: ae_jax.build("mlp9", dtype="int32"), "unsupported dtype"),
])
def test_bad_specs_and_arguments_are_named(make, message):
    with pytest.raises((SpecError, ValueError), match=None) as info:
        make()
    assert message in str(info.value)
