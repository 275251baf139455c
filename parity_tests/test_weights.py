"""Weight transfer: bit-exact round trips, strict validation that changes nothing, safetensors files."""

import os

import numpy as np
import pytest
import safetensors.torch
import torch

import ae_jax
import ae_torch
from ae_core import CheckpointError, StateDictError, init_state_dict, get_spec
from ae_core.weights import load_safetensors, save_safetensors

from helpers import assert_trees_all_close, to_numpy_dict

pytestmark = pytest.mark.usefixtures("strict_promotion")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_torch_jax_torch_is_bit_exact(dtype):
    tm = ae_torch.build("mlp9", dtype=dtype)  # torch's own random init
    original = to_numpy_dict(tm.state_dict())
    jm = ae_jax.build("mlp9", dtype=dtype)
    ae_jax.load_state_dict(jm, tm.state_dict())
    assert np.array_equal(np.asarray(jm.encoder[0].kernel.get_value()), original["encoder.0.weight"].T)
    back = ae_torch.build("mlp9", dtype=dtype, seed=99)
    back.load_state_dict({k: torch.from_numpy(v) for k, v in ae_jax.state_dict(jm).items()}, strict=True)
    assert_trees_all_close(to_numpy_dict(back.state_dict()), original, exact=True)


def test_numpy_and_torch_inputs_are_both_accepted_and_cast_to_the_model_dtype():
    sd64 = init_state_dict(get_spec("mlp9"), 1, "float64")
    jm = ae_jax.build("mlp9", dtype="float32")
    ae_jax.load_state_dict(jm, {k: torch.from_numpy(v) for k, v in sd64.items()})
    got = ae_jax.state_dict(jm)
    assert got["encoder.0.weight"].dtype == np.float32
    np.testing.assert_array_equal(got["encoder.0.weight"], sd64["encoder.0.weight"].astype(np.float32))


def _bad_state_dicts():
    good = init_state_dict(get_spec("mlp9"), 0)
    missing = dict(good); del missing["decoder.8.bias"]
    unexpected = dict(good, **{"decoder.9.weight": np.zeros((3, 3), np.float32)})
    shape = dict(good, **{"encoder.0.weight": np.zeros((784, 128), np.float32)})
    ints = dict(good, **{"encoder.2.bias": np.zeros(64, np.int64)})
    everything = dict(missing, **{"extra": np.zeros(1, np.float32), "encoder.2.weight": np.zeros((1, 1), np.float32)})
    return {
        "missing": (missing, ["missing key 'decoder.8.bias'"]),
        "unexpected": (unexpected, ["unexpected key 'decoder.9.weight'"]),
        "wrong shape": (shape, ["encoder.0.weight: shape (784, 128) != expected (128, 784)"]),
        "int dtype": (ints, ["encoder.2.bias: dtype int64 is not a floating-point dtype"]),
        "all at once": (everything, ["missing key 'decoder.8.bias'", "unexpected key 'extra'",
                                     "encoder.2.weight: shape (1, 1) != expected (64, 128)"]),
        "another preset": (init_state_dict(get_spec("tanh3"), 0),
                           ["encoder.4.weight: shape (32, 64) != expected (36, 64)",
                            "encoder.8.weight: shape (3, 16) != expected (9, 18)"]),
    }


BAD = _bad_state_dicts()


@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_bad_state_dict_raises_listing_every_problem_and_changes_nothing(case, framework):
    sd, expected_lines = BAD[case]
    if framework == "jax":
        model = ae_jax.build("mlp9", seed=5)
        before = ae_jax.state_dict(model)
        with pytest.raises(StateDictError) as info:
            ae_jax.load_state_dict(model, sd)
        after = ae_jax.state_dict(model)
    else:
        model = ae_torch.build("mlp9", seed=5)
        before = ae_torch.state_dict(model)
        with pytest.raises(StateDictError) as info:
            ae_torch.load_state_dict(model, sd)
        after = ae_torch.state_dict(model)
    for line in expected_lines:
        assert line in str(info.value)
    assert len(info.value.problems) >= len(expected_lines)
    assert_trees_all_close(after, before, exact=True)


def test_torch_own_loader_would_half_load_which_is_why_ae_torch_validates_first():
    """Documents the trap: torch copies matching tensors before raising on a size mismatch."""
    model = ae_torch.build("mlp9", seed=5)
    before = ae_torch.state_dict(model)
    sd = {k: torch.from_numpy(v) for k, v in init_state_dict(get_spec("tanh3"), 0).items()}
    with pytest.raises(RuntimeError, match="size mismatch"):
        model.load_state_dict(sd, strict=True)
    changed = [k for k, v in ae_torch.state_dict(model).items() if not np.array_equal(v, before[k])]
    assert "encoder.0.weight" in changed  # same shape in both presets: silently overwritten


def test_non_strict_load_reports_missing_and_unexpected():
    jm = ae_jax.build("mlp9", seed=0)
    sd = {"encoder.0.weight": np.ones((128, 784), np.float32), "head.weight": np.ones(2, np.float32)}
    result = ae_jax.load_state_dict(jm, sd, strict=False)
    assert "head.weight" in result.unexpected_keys and "decoder.8.bias" in result.missing_keys
    assert np.all(ae_jax.state_dict(jm)["encoder.0.weight"] == 1)


# ------------------------------------------------------------------------------------ safetensors --
@pytest.mark.parametrize("writer", ["jax", "torch"])
def test_weights_file_written_by_either_framework_loads_in_both(tmp_path, writer):
    path = tmp_path / "w.safetensors"
    src_t, src_j = ae_torch.build("tanh3", seed=7), ae_jax.build("tanh3", seed=7)
    (ae_jax.save_weights(src_j, path) if writer == "jax" else ae_torch.save_weights(src_t, path))
    expected = init_state_dict(get_spec("tanh3"), 7)
    tm, jm = ae_torch.build("tanh3", seed=1), ae_jax.build("tanh3", seed=1)
    ae_torch.load_weights(tm, path)
    ae_jax.load_weights(jm, path)
    assert_trees_all_close(ae_torch.state_dict(tm), expected, exact=True)
    assert_trees_all_close(ae_jax.state_dict(jm), expected, exact=True)
    # and plain torch users read the same file with safetensors' own loader
    assert_trees_all_close(to_numpy_dict(safetensors.torch.load_file(path)), expected, exact=True)


def test_plain_torch_safetensors_file_loads_into_jax(tmp_path):
    from tutorial_models import MLP9

    path = tmp_path / "plain.safetensors"
    tutorial = MLP9()
    safetensors.torch.save_file(tutorial.state_dict(), path)  # no ae-parity metadata at all
    jm = ae_jax.build("mlp9")
    ae_jax.load_weights(jm, path)
    assert_trees_all_close(ae_jax.state_dict(jm), to_numpy_dict(tutorial.state_dict()), exact=True)


def test_wrong_preset_and_wrong_dtype_files_are_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    ae_jax.save_weights(ae_jax.build("mlp16", seed=0), path)
    jm = ae_jax.build("mlp9", seed=2)
    before = ae_jax.state_dict(jm)
    with pytest.raises(CheckpointError, match="written for model 'mlp16', not 'mlp9'"):
        ae_jax.load_weights(jm, path)
    ae_torch.save_weights(ae_torch.build("mlp9", seed=0, dtype="float64"), path)
    with pytest.raises(CheckpointError, match="written in float64, model is float32"):
        ae_jax.load_weights(jm, path)
    assert_trees_all_close(ae_jax.state_dict(jm), before, exact=True)


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, b"garbage that is not safetensors",
                                     (50).to_bytes(8, "little") + b'{"a": {"dtype": "F32", "shape": [2]'])
def test_corrupt_file_is_a_clear_error_naming_it(tmp_path, content):
    path = tmp_path / "corrupt.safetensors"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="corrupt.safetensors: not a valid safetensors file"):
        load_safetensors(path)


def test_truncated_real_file_is_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    ae_jax.save_weights(ae_jax.build("mlp9", seed=0), path)
    path.write_bytes(path.read_bytes()[:-100])
    jm = ae_jax.build("mlp9", seed=1)
    with pytest.raises(CheckpointError, match="w.safetensors"):
        ae_jax.load_weights(jm, path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="nope.safetensors: file not found"):
        load_safetensors(tmp_path / "nope.safetensors")


def test_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    from ae_core import files

    path = tmp_path / "w.safetensors"
    save_safetensors(path, {"a": np.ones(3, np.float32)})
    old = path.read_bytes()
    with pytest.raises(SafetensorError):  # unserialisable: refused before any file is touched
        save_safetensors(path, {"a": np.ones(3, np.float32), "b": object()})

    def fail_fsync(fd):  # the disk fails after the temp file was written, before the rename
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", fail_fsync)
    with pytest.raises(OSError, match="No space left"):
        save_safetensors(path, {"a": np.zeros(5, np.float32)})
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["w.safetensors"]


def test_conv_weights_with_the_wrong_rank_or_layout_are_refused_by_name():
    jm = ae_jax.build("conv", seed=0)
    before = ae_jax.state_dict(jm)
    sd = init_state_dict(get_spec("conv"), 1)
    sd["encoder.0.weight"] = sd["encoder.0.weight"][..., 0]  # rank 3
    sd["decoder.3.weight"] = sd["decoder.3.weight"].transpose(1, 0, 2, 3)  # Conv2d layout for a ConvTranspose2d
    with pytest.raises(StateDictError) as info:
        ae_jax.load_state_dict(jm, sd)
    assert "encoder.0.weight: shape (16, 1, 3) != expected (16, 1, 3, 3)" in str(info.value)
    assert "decoder.3.weight: shape (16, 32, 3, 3) != expected (32, 16, 3, 3)" in str(info.value)
    assert_trees_all_close(ae_jax.state_dict(jm), before, exact=True)


def test_conv_round_trip_is_bit_exact():
    tm = ae_torch.build("conv")
    jm = ae_jax.build("conv")
    ae_jax.load_state_dict(jm, tm.state_dict())
    k = np.asarray(jm.decoder[3].kernel.get_value())
    assert k.shape == (3, 3, 16, 32)  # (kH, kW, out, in) for nnx.ConvTranspose(transpose_kernel=True)
    assert_trees_all_close(ae_jax.state_dict(jm), to_numpy_dict(tm.state_dict()), exact=True)


def test_loading_torch_tensors_copies_them():
    """torch's .numpy() shares memory and jnp.asarray may alias numpy on CPU: an in-place torch update
    after loading (a train-mode BatchNorm forward) must not change the JAX model."""
    import torch

    import ae_jax

    bn = torch.nn.BatchNorm1d(3).double()
    jm = ae_jax.layers.BatchNorm(3, dtype=ae_jax.jnp_dtype("float64"))
    ae_jax.load_state_dict(jm, bn.state_dict())
    bn(torch.randn(8, 3, dtype=torch.float64))  # updates running_mean / num_batches_tracked in place
    sd = ae_jax.state_dict(jm)
    assert int(sd["num_batches_tracked"]) == 0 and not sd["running_mean"].any()
