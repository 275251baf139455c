"""``ae-parity validate``: whole runs of many seeds in both frameworks and the paired equivalence test (TOST)."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest

from ae_core import get_spec
from ae_core.training import TrainConfig, load_checkpoint
from ae_parity.cli import main
from ae_parity.equivalence import Margin, paired_tost, parse_margin

PRESET = "shallow128"  # the smallest MNIST preset: quick to compile
TINY = ["--epochs", "2", "--limit", "128", "--batch-size", "32"]  # 4 steps an epoch


# ------------------------------------------------------------------------------ the test itself ----
def test_tost_matches_students_sleep_data():
    """Student's (1908) sleep data, paired: R's ``t.test(extra ~ group, data = sleep, paired = TRUE)`` prints
    t = -4.0621, df = 9, p-value = 0.002833, 95% CI -2.4598858 -0.7001142, mean difference -1.58. With a
    negligible margin, the upper one-sided test is that t-test's one-sided half, and alpha 0.025 gives the
    95% interval."""
    g1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
    g2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
    r = paired_tost(np.subtract(g1, g2), margin=1e-12, alpha=0.025)
    assert (r.n, r.df) == (10, 9) and r.mean == pytest.approx(-1.58, abs=1e-12)
    assert r.t_upper == pytest.approx(-4.0621, abs=5e-5)
    assert r.p_upper == pytest.approx(0.002833 / 2, abs=3e-7)
    assert r.ci_low == pytest.approx(-2.4598858, abs=1e-7) and r.ci_high == pytest.approx(-0.7001142, abs=1e-7)
    assert r.p_lower > 0.99 and not r.equivalent  # a mean of -1.58 is not within +-1e-12


def test_tost_matches_the_closed_form_t_distributions():
    """df 1 (Cauchy): P(T >= t) = 1/2 - atan(t)/pi; df 2: P(T >= t) = 1/2 - t / (2 sqrt(2 + t^2)); quantiles
    from the same closed forms (df 1: tan(pi (q - 1/2)); df 2: (2q - 1) / sqrt(2 q (1 - q)))."""
    # n = 2: differences 0.1, 0.3 -> mean 0.2, sd sqrt(0.02), se 0.1; margin 0.5 -> t- = 7, t+ = -3
    r = paired_tost([0.1, 0.3], margin=0.5)
    assert (r.t_lower, r.t_upper) == (pytest.approx(7.0), pytest.approx(-3.0))
    assert r.p_lower == pytest.approx(0.5 - math.atan(7) / math.pi, rel=1e-10)
    assert r.p_upper == pytest.approx(0.5 - math.atan(3) / math.pi, rel=1e-10)  # 0.1024: not equivalent
    half = math.tan(math.pi * 0.45) * 0.1  # t(0.95, df 1) = 6.3138
    assert (r.ci_low, r.ci_high) == (pytest.approx(0.2 - half, rel=1e-10), pytest.approx(0.2 + half, rel=1e-10))
    assert not r.equivalent
    # n = 3: 0.1, 0.2, 0.6 -> mean 0.3, variance 0.07, se sqrt(0.07 / 3); margin 1
    se = math.sqrt(0.07 / 3)
    r = paired_tost([0.1, 0.2, 0.6], margin=1.0)
    assert r.se == pytest.approx(se, rel=1e-12)
    for t, p in ((1.3 / se, r.p_lower), (0.7 / se, r.p_upper)):
        assert p == pytest.approx(0.5 - t / (2 * math.sqrt(2 + t * t)), rel=1e-9)
    assert 0.3 + 0.9 / math.sqrt(2 * 0.95 * 0.05) * se == pytest.approx(r.ci_high, rel=1e-10)  # t(0.95, 2) = 2.92
    assert r.equivalent and r.p == max(r.p_lower, r.p_upper) < 0.05


def test_tost_verdict_is_the_confidence_interval_inside_the_margin():
    rng = np.random.default_rng(0)
    for _ in range(200):
        d = rng.normal(rng.normal(0, 0.5), rng.uniform(0.1, 1), size=rng.integers(2, 12))
        r = paired_tost(d, margin=1.0)
        inside = -1.0 < r.ci_low and r.ci_high < 1.0
        assert r.equivalent == inside == (r.p_lower < 0.05 and r.p_upper < 0.05)
        assert (r.p_lower < 0.05) == (r.ci_low > -1.0) and (r.p_upper < 0.05) == (r.ci_high < 1.0)


def test_tost_says_when_it_cannot_test():
    with pytest.raises(ValueError, match="at least 2 paired results"):
        paired_tost([0.1], margin=1.0)
    with pytest.raises(ValueError, match="not all finite"):
        paired_tost([0.1, math.nan], margin=1.0)
    with pytest.raises(ValueError, match="margin must be a positive number"):
        paired_tost([0.1, 0.2], margin=0.0)
    inside = paired_tost([2e-7] * 4, margin=1e-6)  # bit-identical differences: zero variance
    assert inside.equivalent and inside.std == 0 and (inside.p_lower, inside.p_upper) == (0.0, 0.0)
    assert "zero variance: all 4 differences are exactly 2e-07" in inside.degenerate
    outside = paired_tost([3e-6] * 4, margin=1e-6)
    assert not outside.equivalent and outside.p_upper == 1.0 and outside.degenerate
    assert paired_tost([0.1, 0.2], margin=1.0).degenerate is None


def test_margin_parsing():
    assert parse_margin("2%") == Margin(0.02, True) and parse_margin("2%").absolute(-0.5) == 0.01
    assert parse_margin("5e-4") == Margin(5e-4, False) and parse_margin("5e-4").absolute(123.0) == 5e-4
    for bad in ("0", "-1%", "abc", "%", "inf", "1e-3%%"):
        with pytest.raises(ValueError, match="expected a positive number"):
            parse_margin(bad)


# ------------------------------------------------------------------------------- the command ----
def _main(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse
            code = e.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def run(data_dir, tmp_path_factory):
    """One float32 validate run: 3 seeds, 2 epochs of 4 steps on the real MNIST sample."""
    out = tmp_path_factory.mktemp("validate")
    code, printed, log = _main(["validate", "--preset", PRESET, "--seeds", "0-2", *TINY, "--data", "sample",
                                "--data-dir", str(data_dir), "--out", str(out)])
    return {"code": code, "printed": printed, "log": log, "out": out,
            "summary": json.loads((out / "validate.json").read_text())}


def test_validate_trains_both_frameworks_and_reports_an_equivalence_verdict(run):
    assert run["code"] == 0, run["log"]
    s, out, printed = run["summary"], run["out"], run["printed"]
    assert s["preset"] == PRESET and s["seeds"] == [0, 1, 2] and s["config"]["dtype"] == "float32"
    assert (s["train_examples"], s["eval_examples"], s["data"]) == (128, 1000, "sample")
    assert s["verdict"] == "equivalent" and "verdict: EQUIVALENT" in printed
    torch_final = np.array([r["torch"] for r in s["per_seed"]])
    assert s["margin"]["given"] == "2%" and s["margin"]["value"] == pytest.approx(0.02 * torch_final.mean())
    assert "2% of torch's mean final eval loss" in printed and "90% CI" in printed
    test = s["test"]
    assert test["n"] == 3 and test["df"] == 2 and test["alpha"] == 0.05 and test["p"] < 0.05
    assert test["ci_low"] > -test["margin"] and test["ci_high"] < test["margin"]
    for r in s["per_seed"]:  # the table's numbers are the runs' own final eval losses
        assert f"seed {r['seed']}" in printed
        for fw in ("torch", "jax"):
            metrics = json.loads((out / fw / f"seed{r['seed']}-lr0.001" / "metrics.json").read_text())
            assert metrics["framework"] == fw and len(metrics["epochs"]) == 2
            assert metrics["epochs"][-1]["eval_loss"] == r[fw] == s["curves"][fw][str(r["seed"])][-1]
        assert r["difference"] == r["jax"] - r["torch"] and abs(r["relative"]) < 1e-4
        # the same experiment: the two checkpoints carry the same training config (seed, lr, batch, optimizer)
        tc, jc = (load_checkpoint(out / fw / f"seed{r['seed']}-lr0.001" / "checkpoint.safetensors")
                  for fw in ("torch", "jax"))
        assert tc.config == jc.config and tc.config.seed == r["seed"] and (tc.framework, jc.framework) == (
            "torch", "jax")
    assert len({r["torch"] for r in s["per_seed"]}) == 3  # the seeds really differ
    png = out / "eval_curves.png"
    assert s["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_jax_seed_equals_its_single_seed_run(run, data_dir):
    """The vmapped sweep's member s is seed s trained alone (ae_jax.train.Trainer), in float32."""
    from ae_jax.train import Trainer
    from ae_parity.runner import load_data

    spec, seed = get_spec(PRESET), 2
    data = load_data(spec, "sample", data_dir, "float32", limit=128)
    cfg = TrainConfig.from_json(json.dumps({**run["summary"]["config"], "seed": seed}))
    solo = Trainer(spec, cfg, data.x_train, data.x_eval, mode="scan")
    curve = []
    for epoch in range(cfg.epochs):
        solo.train_epoch(epoch)
        curve.append(solo.evaluate())
    member = load_checkpoint(run["out"] / "jax" / f"seed{seed}-lr0.001" / "checkpoint.safetensors")
    np.testing.assert_allclose(curve, run["summary"]["curves"]["jax"][str(seed)], rtol=1e-6, atol=0)
    state = solo.model_state()
    for name, value in member.model.items():
        np.testing.assert_allclose(value, state[name], rtol=0, atol=1e-6, err_msg=name)


def test_a_planted_difference_is_not_shown_equivalent(data_dir, tmp_path):
    """The JAX side trained at a tenth of the learning rate: a real difference (+31% here), far outside the margin."""
    from ae_core.optim import OptimizerConfig
    from ae_parity.runner import load_data
    from ae_parity.validate import format_report, validate_run

    spec = get_spec(PRESET)
    data = load_data(spec, "sample", data_dir, "float32", limit=128)
    config = TrainConfig(epochs=2, batch_size=32, optimizer=OptimizerConfig("adam", lr=1e-3), dtype="float32")
    s = validate_run(spec, config, [0, 1, 2], tmp_path, data=data, margin=parse_margin("2%"), jax_lr=1e-4,
                     log=lambda m: None)
    assert s["verdict"] == "not shown equivalent" and s["jax_lr"] == 1e-4
    t = s["test"]
    assert t["ci_low"] > t["margin"]  # lr 1e-4 trains much slower in 8 steps: the whole CI above +margin
    assert t["p_upper"] > 0.95 and t["p"] >= 0.05
    assert "lies entirely outside the margin" in format_report(s)


def test_a_margin_far_below_the_spread_exits_1(data_dir, tmp_path):
    code, printed, log = _main(["validate", "--preset", PRESET, "--seeds", "0,1", "--epochs", "1", "--limit", "64", "--margin", "1e-12",
                                "--data", "sample", "--data-dir", str(data_dir), "--out", str(tmp_path)])
    assert code == 1, log
    assert "verdict: NOT SHOWN EQUIVALENT within +-1e-12" in printed
    assert "absolute (--margin)" in printed
    assert json.loads((tmp_path / "validate.json").read_text())["verdict"] == "not shown equivalent"


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "3-1"], "the range 3-1 is empty"),
    (["--seeds", "4"], "ae-parity validate: error: --seeds 4: the paired equivalence test needs at least 2 seeds"),
    (["--seeds", "1,1"], "ae-parity validate: error: seeds repeat: [1, 1]"),
    (["--margin=-1%"], "expected a positive number, or a positive percentage like 2%"),
    (["--alpha", "0.7"], "expected a level between 0 and 0.5, got '0.7'"),
])
def test_bad_arguments_give_one_line_errors(data_dir, tmp_path, argv, message):
    out = tmp_path / "v"
    code, printed, err = _main(["validate", "--data", "sample", "--data-dir", str(data_dir), "--out", str(out), *argv])
    assert code == 2 and printed == ""
    lines = [line for line in err.splitlines() if not line.startswith(("usage:", " "))]  # argparse adds usage
    assert len(lines) == 1 and message in lines[0], err
    assert not out.exists()
