"""What a user touches on the command line beyond the presets (issue 18): a model spec of their own
(``--spec``), the best checkpoint and early stopping, commands that run without the optional extras,
``--version`` and ``doctor``."""

import json
import os
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

import ae_core
from ae_core.training import load_checkpoint
from ae_core.weights import read_metadata
from helpers import hide_modules

ROOT = Path(__file__).resolve().parents[1]
# a user's own architecture, built with the Python API as the README shows (not a preset)
MINE = dict(name="mine", sizes=[784, 200, 64, 12], act="sigmoid", code_act=None, out_act="sigmoid")


def run_cli(*args, data_dir, env=None, hide=()):
    """``ae-parity ARGS`` in a fresh process; ``hide``: modules made impossible to import there (as if not
    installed: a package of that name first on the path whose import raises ModuleNotFoundError)."""
    env = dict(os.environ, AE_PARITY_DATA=str(data_dir), **(env or {}))
    if hide:
        env = hide_modules(Path(data_dir).parent / ("hidden-" + "-".join(hide)), hide, env)
    return subprocess.run([sys.executable, "-m", "ae_parity.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600, cwd=ROOT)


def mine():
    return ae_core.mlp(MINE["name"], MINE["sizes"], MINE["act"], code_act=MINE["code_act"], out_act=MINE["out_act"])


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(mine().to_json())
    return path


def test_every_command_with_preset_takes_spec_instead(spec_file):
    """--spec FILE.json wherever --preset is accepted; the spec read stands where the preset name would."""
    from ae_parity import cli

    for command in ("demo", "train", "sweep", "validate", "bench", "parity"):
        extra = ["--out", "x"] if command == "train" else []
        args = cli.parse_args([command, "--spec", str(spec_file), *extra])
        assert args.preset == mine() and args.preset.same_architecture(mine()), command
        with pytest.raises(SystemExit):  # one model: --preset and --spec together are a usage error
            cli.parse_args([command, "--spec", str(spec_file), "--preset", "mlp9", *extra])


@pytest.mark.parametrize("content, message", [(None, "file not found"), ("{not json", "not a valid model spec"),
                                              ('{"name": "x"}', "not a valid model spec")])
def test_a_bad_spec_file_is_a_usage_error_naming_it(tmp_path, data_dir, content, message):
    path = tmp_path / "spec.json"
    if content is not None:
        path.write_text(content)
    out = run_cli("train", "--spec", str(path), "--out", str(tmp_path / "run"), data_dir=data_dir)
    assert out.returncode == 2
    assert f"--spec: {path}: {message}" in out.stderr
    assert not (tmp_path / "run").exists()  # nothing written


def test_train_a_custom_spec_from_the_command_line_then_again_from_its_checkpoint(spec_file, tmp_path, data_dir):
    """The README's custom-model example: a spec written with the Python API, trained by the CLI; the run's
    checkpoint records the spec, so ``--spec checkpoint.safetensors`` trains the same architecture again."""
    run = tmp_path / "run"
    out = run_cli("train", "--framework", "torch", "--spec", str(spec_file), "--epochs", "2", "--limit", "256",
                  "--out", str(run), "--no-progress", data_dir=data_dir)
    assert out.returncode == 0, out.stderr
    ckpt = load_checkpoint(run / "checkpoint.safetensors")
    assert ckpt.spec.same_architecture(mine()) and ckpt.spec.name == "mine"
    # the layer sizes the user asked for, read off the saved weights
    assert [ckpt.model[f"encoder.{i}.weight"].shape for i in (0, 2, 4)] == [(200, 784), (64, 200), (12, 64)]
    again = run_cli("train", "--spec", str(run / "checkpoint.safetensors"), "--epochs", "1", "--limit", "256",
                    "--out", str(tmp_path / "again"), "--no-progress", data_dir=data_dir)
    assert again.returncode == 0, again.stderr
    assert load_checkpoint(tmp_path / "again" / "checkpoint.safetensors").spec.same_architecture(mine())
    # resuming with --spec of another architecture is refused, naming both
    other = tmp_path / "other.json"
    other.write_text(ae_core.mlp("other", [784, 32, 8], "relu").to_json())
    refused = run_cli("train", "--resume", str(run), "--spec", str(other), "--epochs", "3", data_dir=data_dir)
    assert refused.returncode == 2 and "--spec other (the run trained mine" in refused.stderr


def test_parity_and_bench_run_a_custom_spec(spec_file, tmp_path, data_dir):
    """--spec end to end where the spec crosses a process boundary (bench's workers) or meets both frameworks
    on one batch (parity): float64 parity of the user's model, and a side-by-side bench of it."""
    par = run_cli("parity", "--spec", str(spec_file), "--dtype", "float64", data_dir=data_dir)
    assert par.returncode == 0, par.stderr
    assert "mine | float64" in par.stdout and par.stdout.rstrip().endswith("PARITY OK")
    report = tmp_path / "bench.json"
    bench = run_cli("bench", "--spec", str(spec_file), "--batch-sizes", "64", "--epochs", "1", "--limit", "256",
                    "--no-loader", "--json", str(report), data_dir=data_dir)
    assert bench.returncode == 0, bench.stderr
    assert json.loads(report.read_text())["preset"] == "mine"


def _eval_loss(path: Path, data_dir) -> float:
    """The eval loss of a checkpoint's weights, recomputed from scratch in torch on the run's eval set."""
    import torch

    import ae_torch

    ckpt = load_checkpoint(path)
    model = ae_torch.build(ckpt.spec, dtype=ckpt.config.dtype)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ckpt.model.items()})
    model.eval()
    x = ae_core.mnist.load("test", "sample", data_dir).images.reshape(-1, 784).astype(np.float32) / 255.0
    with torch.no_grad():
        return float(torch.mean((model(torch.from_numpy(x)) - torch.from_numpy(x)) ** 2))


def test_the_best_epoch_is_kept_and_early_stop_stops_after_n_epochs_without_improvement(tmp_path, data_dir):
    """A learning rate high enough that the eval loss stops improving: the run stops N epochs after its best
    epoch, best.safetensors holds that epoch (its weights give the best eval loss, recomputed), and a
    resumed run whose best file fell behind (a crash between the two writes) catches it up."""
    run = tmp_path / "run"
    out = run_cli("train", "--framework", "torch", "--preset", "shallow128", "--lr", "0.02", "--epochs", "40",
                  "--early-stop", "2", "--limit", "512", "--out", str(run), "--no-progress", data_dir=data_dir)
    assert out.returncode == 0, out.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    losses = [r["eval_loss"] for r in metrics["epochs"]]
    best = int(np.argmin(losses)) + 1
    assert len(losses) < 40, "the eval loss never stalled: the test needs a higher learning rate"
    assert len(losses) == best + 2  # stopped exactly N = 2 epochs after the best
    assert metrics["best"] == {"epoch": best, "eval_loss": losses[best - 1], "file": "best.safetensors"}
    assert metrics["stopped_early"] == {"after_epoch": best + 2, "patience": 2, "best_epoch": best}
    assert out.stderr.count("early stop after epoch") == 1
    meta = read_metadata(run / "best.safetensors")
    assert meta["epoch"] == str(best) and meta["extra.role"] == "best"
    assert load_checkpoint(run / "checkpoint.safetensors").epoch == best + 2
    assert _eval_loss(run / "best.safetensors", data_dir) == pytest.approx(losses[best - 1], rel=1e-5)
    assert _eval_loss(run / "checkpoint.safetensors", data_dir) == pytest.approx(losses[-1], rel=1e-5)

    # a run begun by an older ae-parity (no best.safetensors) whose best epoch is behind its checkpoint: the
    # resume says those weights were not kept, and metrics.json names no file until an epoch beats it
    (run / "best.safetensors").unlink()
    more = run_cli("train", "--resume", str(run), "--epochs", str(best + 3), "--no-progress", data_dir=data_dir)
    assert more.returncode == 0, more.stderr
    assert f"the best epoch so far ({best}, eval loss" in more.stderr and "was not kept" in more.stderr
    after = json.loads((run / "metrics.json").read_text())
    if after["best"]["epoch"] == best:  # epoch best + 3 did not beat it
        assert after["best"]["file"] is None and not (run / "best.safetensors").exists()
        assert "best.safetensors" not in more.stdout
    else:
        assert after["best"] == {"epoch": best + 3, "eval_loss": after["epochs"][-1]["eval_loss"],
                                 "file": "best.safetensors"}
        assert read_metadata(run / "best.safetensors")["epoch"] == str(best + 3)

    # a fresh run whose last epoch is its best, with best.safetensors lost: resuming rewrites it
    short = tmp_path / "short"
    assert run_cli("train", "--framework", "torch", "--preset", "shallow128", "--epochs", "2", "--limit", "256",
                   "--out", str(short), "--no-progress", data_dir=data_dir).returncode == 0
    assert json.loads((short / "metrics.json").read_text())["best"]["epoch"] == 2  # lr 1e-3: still improving
    (short / "best.safetensors").unlink()
    resumed = run_cli("train", "--resume", str(short), "--epochs", "3", "--no-progress", data_dir=data_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert "best.safetensors did not hold the best epoch (2): rewritten" in resumed.stderr
    assert read_metadata(short / "best.safetensors")["epoch"] == str(
        json.loads((short / "metrics.json").read_text())["best"]["epoch"])


def test_train_runs_without_the_optional_extras_and_says_once_what_it_skipped(tmp_path, data_dir):
    out = run_cli("train", "--preset", "shallow128", "--epochs", "2", "--limit", "256", "--out", str(tmp_path / "r"),
                  data_dir=data_dir, hide=("tensorboard", "tqdm", "matplotlib"))
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("TensorBoard scalars skipped: tensorboard is not installed") == 1
    assert out.stderr.count("progress bars (a line per epoch instead) skipped: tqdm is not installed") == 1
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "r" / "tensorboard").exists() and "tensorboard" not in out.stdout
    assert (tmp_path / "r" / "best.safetensors").exists()


def test_version_is_the_installed_package_and_pyprojects():
    out = subprocess.run([sys.executable, "-m", "ae_parity.cli", "--version"], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    wanted = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert out.returncode == 0 and out.stdout.strip() == f"ae-parity {wanted}" == f"ae-parity {version('ae-parity')}"


def test_doctor_reports_versions_devices_threads_and_precision(tmp_path):
    out = run_cli("doctor", "--json", data_dir=tmp_path)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    for name in ("jax", "jaxlib", "flax", "optax", "torch", "torchvision", "numpy", "safetensors"):
        assert r["packages"][name] == version(name)
    import jax
    import torch

    assert r["jax"]["devices"] == [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices()]
    assert r["torch"]["threads"] == torch.get_num_threads()  # the same environment, the same count
    assert {"default_matmul_precision", "x64_enabled"} <= set(r["jax"])
    assert {"float32_matmul_precision", "cuda_matmul_allow_tf32", "cudnn_allow_tf32"} <= set(r["torch"])


def test_doctor_says_what_is_not_installed(monkeypatch):
    """A framework not installed at all (no distribution, no module): "not installed", and named as missing."""
    from ae_parity import doctor

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ModuleNotFoundError
    real = doctor.version_of
    monkeypatch.setattr(doctor, "version_of", lambda name: doctor.MISSING if name in ("torch", "torchvision")
                        else real(name))
    r = doctor.report()
    assert r["torch"] == {"status": "not installed"} and r["packages"]["torch"] == "not installed"
    text = doctor.render(r)
    assert "torch: not installed" in text and "missing: torch, torchvision" in text


def test_doctor_works_without_torch_and_says_so(tmp_path):
    out = run_cli("doctor", data_dir=tmp_path, hide=("torch",))
    assert out.returncode == 0, out.stderr
    assert "torch: unavailable (ModuleNotFoundError: No module named 'torch')" in out.stdout
    assert "jax: ok" in out.stdout and "missing: torch" in out.stdout
