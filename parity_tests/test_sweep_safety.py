"""A sweep's folder is a set of runs (issue 16, items 2 and 7): its memory is estimated and checked before
anything is allocated, every learning rate gets its own member folder, an existing sweep is not replaced
unless asked, and the sweep and a resume of one of its members never write at the same time."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ae_core import UsageError, get_spec, model_inputs
from ae_core.optim import OptimizerConfig
from ae_core.training import TrainConfig, default_loss
from ae_jax.sweep import Member, SweepTrainer, grid, lr_text
from ae_parity.cli import main
from ae_parity.rundir import RunLock
from ae_parity.sweep import memory_estimate


def test_learning_rates_equal_to_six_digits_get_their_own_folders():
    """Item 7: seed0-lr0.001 for both 1e-3 and 1.0000001e-3 (``:g``) -- two members, one folder."""
    lrs = [1e-3, 1.0000001e-3, 0.0010000000000000002, 3e-3, 10.0]
    names = [m.name for m in grid([0], lrs)]
    assert len(set(names)) == len(lrs)
    assert names[0] == "seed0-lr0.001" and names[-1] == "seed0-lr10"  # the short names stay where exact
    rng = np.random.default_rng(0)
    for lr in [*lrs, *10.0 ** rng.uniform(-8, 1, 200)]:
        assert float(lr_text(float(lr))) == float(lr)  # the name gives the learning rate back exactly


@pytest.mark.parametrize("preset", ["mlp9", "conv", "denoise"])
def test_the_memory_estimate_covers_what_xla_allocates(train, preset):
    """The estimate's device parts against XLA's own account of the compiled sweep epoch (arguments,
    outputs and temporaries, less the donated buffers it reuses): never below it, and within 4x."""
    spec = get_spec(preset)
    x = model_inputs(spec, train.images[:512], "float32")
    config = TrainConfig(epochs=1, batch_size=32, optimizer=OptimizerConfig("adam"), loss=default_loss(spec))
    members = grid([0, 1, 2, 3], [1e-3])
    sweep = SweepTrainer(spec, config, members, x, None)
    ma = sweep.lower(0).compile().memory_analysis()
    xla = ma.argument_size_in_bytes + ma.output_size_in_bytes + ma.temp_size_in_bytes - ma.alias_size_in_bytes
    est = memory_estimate(spec, config, len(members), len(x), 0)
    device = est["total"] - est["parts"]["host copies"]
    assert xla <= device <= 4 * xla, (xla, est["parts"])
    assert est["parts"]["weights and buffers"] == 4 * 4 * sum(int(np.prod(s)) for s in spec.state_shapes().values())


def test_a_sweep_that_does_not_fit_is_refused_before_anything_is_allocated(data_dir, tmp_path, capsys):
    """Item 2: --seeds 0-100000 allocated until the machine was nearly out of memory, saying nothing."""
    out = tmp_path / "sweep"
    code = main(["sweep", "--preset", "mlp9", "--seeds", "0-100000", "--epochs", "1", "--out", str(out),
                 "--data", "sample", "--data-dir", str(data_dir)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "100001 models of mlp9 (float32, batch 32) need about" in err[0] and "GB, more than the" in err[0]
    assert "such models fit; sweep fewer seeds or learning rates" in err[0]
    assert not out.exists()


def test_a_sweep_says_its_estimate_and_refuses_to_replace_an_existing_one(data_dir, tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "--preset", "mlp16", "--seeds", "0-1", "--epochs", "1", "--limit", "64", "--out", str(out),
            "--data", "sample", "--data-dir", str(data_dir)]
    assert main(argv) == 0
    assert "sweep: 2 models of mlp16 (float32, batch 32) need about" in capsys.readouterr().err
    before = (out / "summary.json").read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "already holds a sweep (summary.json and 4 more): replace it with --overwrite" in err
    assert (out / "summary.json").read_bytes() == before
    assert main([*argv, "--lr", "2e-3", "--overwrite"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [m["lr"] for m in summary["members"]] == [2e-3, 2e-3]
    assert not (out / "seed0-lr0.001" / "checkpoint.safetensors").exists()  # the replaced sweep's runs went


def test_a_member_is_not_resumed_while_its_sweep_runs(tmp_path):
    """The sweep holds its folder's lock; resuming a member takes it shared: refused while the sweep runs,
    and two members resume at once."""
    member_a, member_b = tmp_path / Member(0, 1e-3).name, tmp_path / Member(1, 1e-3).name
    with RunLock(tmp_path):
        with pytest.raises(UsageError, match=f"{tmp_path} is being written by process"):
            with RunLock(member_a):
                pass
    with RunLock(member_a), RunLock(member_b):
        with pytest.raises(UsageError, match="is being written by"):
            with RunLock(tmp_path):
                pass
