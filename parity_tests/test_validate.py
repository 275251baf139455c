"""``ae-parity validate``: the paired equivalence test (TOST)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ae_parity.equivalence import Margin, paired_tost, parse_margin

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
