"""What no model should load, and data files the torch side read without a word (issue 16, items 10, 12-14):
inf weights, values the model's dtype cannot hold, counters beyond their integer type, meta-device tensors,
a folder in place of an IDX file, bad labels or counts through torchvision, a stale torchvision cache."""

import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import ae_jax
import ae_torch
from ae_core import mnist
from ae_core.mnist import FILES, MnistFileError, read_idx, write_idx
from ae_core.optim import OptimizerConfig
from ae_core.training import TrainConfig, load_checkpoint
from ae_core.weights import CheckpointError, StateDictError
from ae_parity import cli
from ae_parity.runner import CHECKPOINT, Data, train_run
from ae_torch.data import mnist_dataset

FRAMEWORKS = {"torch": (ae_torch.build, ae_torch.load_state_dict, ae_torch.state_dict),
              "jax": (ae_jax.build, ae_jax.load_state_dict, ae_jax.state_dict)}


def loads_nothing(framework, dtype, change, match):
    build, load, state = FRAMEWORKS[framework]
    model = build("conv_bn", dtype=dtype, seed=0)
    before = state(model)
    bad = {k: v.copy() for k, v in before.items()}
    change(bad)
    with pytest.raises(StateDictError, match=match):
        load(model, bad)
    for k, v in state(model).items():  # nothing assigned
        np.testing.assert_array_equal(v, before[k], err_msg=k)


@pytest.mark.parametrize("framework", ["torch", "jax"])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_non_finite_weights_are_refused(framework, value):
    """Item 10: inf weights loaded and trained."""
    def poison(sd):
        sd["encoder.0.weight"][0, 0, 1, 2] = value

    loads_nothing(framework, "float32", poison, r"encoder.0.weight: holds 1 non-finite value\(s\) \(inf or NaN\)")


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_values_beyond_the_models_dtype_are_refused_and_load_where_they_fit(framework):
    """Item 10: 1e300 loaded into float32 became inf without a word."""
    build, load, state = FRAMEWORKS[framework]
    wide = {k: v.astype(np.float64) if v.dtype.kind == "f" else v for k, v in state(build("conv_bn", dtype="float64")).items()}
    wide["decoder.7.bias"][0] = -1e300

    def put(sd):
        sd.update({k: v.copy() for k, v in wide.items()})

    loads_nothing(framework, "float32", put, r"decoder.7.bias: holds 1e\+300, beyond the model's float32 \(max 3.403e\+38\)")
    model64 = build("conv_bn", dtype="float64")
    load(model64, wide)  # a float64 model holds it
    assert state(model64)["decoder.7.bias"][0] == -1e300


@pytest.mark.parametrize("framework, count, match", [
    ("torch", -1, "num_batches_tracked: holds -1: a counter is never negative"),
    ("jax", -5, "a counter is never negative"),
])
def test_counters_that_do_not_fit_are_refused(framework, count, match):
    """Item 13: a num_batches_tracked of 2**40 loaded as 0 into the float32 (int32-counter) JAX model."""
    def put(sd):
        sd["encoder.1.num_batches_tracked"] = np.array(count, dtype=np.int64)

    loads_nothing(framework, "float32", put, match)


def test_a_counter_beyond_int32_is_refused_by_a_float32_jax_process():
    """Item 13: a num_batches_tracked of 2**40 loaded as 0 into a float32 JAX model, whose counters are int32
    while jax_enable_x64 is off (as in any float32 process; this suite's process has it on)."""
    code = ("import numpy as np, jax, ae_jax\nfrom ae_core.weights import StateDictError\n"
            "assert not jax.config.jax_enable_x64\nmodel = ae_jax.build('conv_bn', dtype='float32')\n"
            "sd = ae_jax.state_dict(model)\nsd['encoder.1.num_batches_tracked'] = np.array(2 ** 40)\n"
            "try:\n    ae_jax.load_state_dict(model, sd)\nexcept StateDictError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert ("encoder.1.num_batches_tracked: holds 1099511627776, more than the model's int32 holds (2147483647); "
            "JAX stores it in int32 unless jax_enable_x64 is set") in out.stdout


def test_a_counter_of_2_to_the_40_loads_exactly_into_torch():
    model = ae_torch.build("conv_bn", dtype="float32")
    sd = ae_torch.state_dict(model)
    sd["encoder.1.num_batches_tracked"] = np.array(2 ** 40, dtype=np.int64)
    ae_torch.load_state_dict(model, sd)
    assert int(model.state_dict()["encoder.1.num_batches_tracked"]) == 2 ** 40


def test_meta_device_tensors_are_a_state_dict_error():
    """Item 13: a model built on the meta device gave NotImplementedError from deep inside torch."""
    with torch.device("meta"):
        meta = ae_torch.build("mlp16", dtype="float32")
    for load, model in ((ae_jax.load_state_dict, ae_jax.build("mlp16")), (ae_torch.load_state_dict,
                                                                           ae_torch.build("mlp16"))):
        with pytest.raises(StateDictError, match="encoder.0.weight: not an array .*meta-device tensor holds no values"):
            load(model, meta.state_dict())


def test_a_checkpoint_with_inf_weights_is_not_resumed(tmp_path, train, capsys):
    x = train.images[:100].reshape(100, -1).astype(np.float64) / 255
    config = TrainConfig(epochs=1, batch_size=50, optimizer=OptimizerConfig("adam"), dtype="float64")
    train_run("torch", "mlp16", config, tmp_path, data=Data(x, x, "sample"), log=print)
    from safetensors import safe_open
    from safetensors.numpy import save_file

    with safe_open(str(tmp_path / CHECKPOINT), "np") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors["model.decoder.0.weight"][0, 0] = np.inf
    save_file(tensors, tmp_path / CHECKPOINT, metadata=meta)
    with pytest.raises(CheckpointError, match="model: decoder.0.weight: holds 1 non-finite value"):
        load_checkpoint(tmp_path / CHECKPOINT)
    assert cli.main(["train", "--resume", str(tmp_path), "--epochs", "2"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "non-finite value" in err[0]


def sample_copy(data_dir, tmp_path):
    shutil.copytree(mnist.raw_dir(data_dir, "sample"), mnist.raw_dir(tmp_path, "sample"))
    return mnist.raw_dir(tmp_path, "sample")


def test_a_folder_in_place_of_an_idx_file_is_one_line(tmp_path, data_dir, capsys):
    """Item 14: a traceback (the sample writer tried to rename over the folder)."""
    raw = sample_copy(data_dir, tmp_path)
    (raw / FILES["test"][0]).unlink()
    (raw / FILES["test"][0]).mkdir()
    with pytest.raises(MnistFileError, match="t10k-images-idx3-ubyte: is not a file"):
        mnist.ensure(tmp_path, "sample")
    assert cli.main(["train", "--out", str(tmp_path / "run"), "--data", "sample", "--data-dir", str(tmp_path),
                     "--preset", "mlp16"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a file (a folder in place of an MNIST IDX file?)" in err[0]


@pytest.mark.parametrize("damage, message", [("label 99", "label 99 out of range 0..9"),
                                             ("one label less", "count mismatch: 4000 images but 3999 labels")])
def test_the_torch_dataset_refuses_what_torchvision_accepts(tmp_path, data_dir, damage, message):
    """Item 14: torchvision's MNIST reads a label 99 and 4000 images with 3999 labels without a word."""
    raw = sample_copy(data_dir, tmp_path)
    labels = read_idx(raw / FILES["train"][1])
    if damage == "label 99":
        labels = labels.copy()
        labels[17] = 99
    else:
        labels = labels[:-1]
    write_idx(raw / FILES["train"][1], labels)
    import torchvision

    torchvision.datasets.MNIST(str(tmp_path / "sample"), train=True)  # what torchvision alone does: no error
    with pytest.raises(MnistFileError, match=message):
        mnist_dataset("train", "sample", tmp_path)


def test_a_stale_torchvision_cache_is_refused(tmp_path, data_dir):
    """Item 14: torchvision prefers processed/training.pt (its legacy cache) to the raw files."""
    sample_copy(data_dir, tmp_path)
    ds = mnist_dataset("train", "sample", tmp_path)
    processed = tmp_path / "sample" / "MNIST" / "processed"
    processed.mkdir()
    torch.save((ds.data[:10].clone(), ds.targets[:10].clone()), processed / "training.pt")
    torch.save((ds.data[:10].clone(), ds.targets[:10].clone()), processed / "test.pt")
    with pytest.raises(MnistFileError, match=r"processed/training.pt: torchvision reads other train digits than "
                                             r"the raw IDX files"):
        mnist_dataset("train", "sample", tmp_path)
    torch.save((ds.data.clone(), ds.targets.clone()), processed / "training.pt")  # a cache of the same digits
    assert len(mnist_dataset("train", "sample", tmp_path)) == 4000
