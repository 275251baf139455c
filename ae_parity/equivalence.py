"""Equivalence of two frameworks' results: the paired TOST (two one-sided t-tests) and its margin.

Ordinary tests ask "is there a difference?", and a non-significant answer does not show there is none.
Equivalence testing turns the hypotheses round: with a margin ``m`` fixed beforehand, TOST rejects both

    H0-: mean difference <= -m     (t- = (mean + m) / se, p- = P(T >= t-))
    H0+: mean difference >= +m     (t+ = (mean - m) / se, p+ = P(T <= t+))

each at level alpha, T a Student t with n - 1 degrees of freedom on the per-pair differences. Both
rejected (max(p-, p+) < alpha) is the same as the 1 - 2 alpha (90% for alpha 0.05) confidence interval
of the mean difference lying inside (-m, +m): the two frameworks are shown *equivalent* within m.

Two cases the t-test cannot handle are said so: fewer than 2 pairs (no variance estimate: an error),
and all differences identical (zero variance: t is infinite; the verdict is then the limit, decided by
whether that one difference lies inside the margin, and the result says it is degenerate).

The t distribution is ``scipy.stats.t`` (scipy is installed wherever JAX is: JAX requires it).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import numpy as np

from ae_core import UsageError

DEFAULT_MARGIN = "2%"  # of the reference's (torch's) mean; see docs/training.md, "Whole runs: ae-parity validate"
DEFAULT_ALPHA = 0.05


@dataclass(frozen=True)
class Margin:
    """An equivalence margin as given: ``relative`` (a fraction of the reference mean) or absolute."""

    value: float
    relative: bool

    def absolute(self, reference_mean: float) -> float:
        return self.value * abs(reference_mean) if self.relative else self.value

    def describe(self, reference_mean: float) -> str:
        if self.relative:
            return f"{self.value * 100:g}% of torch's mean final eval loss {reference_mean:.6g}"
        return "absolute (--margin)"


def parse_margin(text: str) -> Margin:
    """``"2%"`` (relative to the reference mean) or ``"0.0005"`` (absolute, in loss units); > 0."""
    m = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(%?)\s*", str(text))
    try:
        value = float(m[1]) if m else math.nan
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"margin {text!r}: expected a positive number, or a positive percentage like 2%")
    return Margin(value / 100 if m[2] else value, bool(m[2]))


@dataclass(frozen=True)
class Tost:
    """The result of :func:`paired_tost`; ``equivalent`` is the verdict."""

    n: int
    df: int
    mean: float
    std: float            # sample standard deviation of the differences (ddof 1)
    se: float
    margin: float
    alpha: float
    ci_low: float         # the 1 - 2 alpha confidence interval of the mean difference
    ci_high: float
    t_lower: float        # H0-: mean <= -margin
    t_upper: float        # H0+: mean >= +margin
    p_lower: float
    p_upper: float
    equivalent: bool
    degenerate: str | None = None  # why the t-test did not apply (zero variance), else None

    @property
    def p(self) -> float:
        """The TOST p-value: the larger of the two one-sided ones."""
        return max(self.p_lower, self.p_upper)

    @property
    def confidence(self) -> float:
        return 1 - 2 * self.alpha

    def to_dict(self) -> dict:
        return {**asdict(self), "p": self.p, "confidence": self.confidence}


def t_sf(t: float, df: int) -> float:
    """P(T >= t) for Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t as student_t

    return float(student_t.sf(t, df))


def t_quantile(q: float, df: int) -> float:
    from scipy.stats import t as student_t

    return float(student_t.ppf(q, df))


def paired_tost(differences, margin: float, alpha: float = DEFAULT_ALPHA) -> Tost:
    """TOST on paired differences (e.g. jax - torch per seed) with equivalence margin ``margin`` (> 0)."""
    d = np.asarray(differences, dtype=np.float64).ravel()
    n = len(d)
    if n < 2:
        raise UsageError(f"an equivalence test needs at least 2 paired results (seeds), got {n}: one pair has no "
                         "variance to estimate")
    if not np.all(np.isfinite(d)):
        raise UsageError(f"the differences are not all finite: {d.tolist()}")
    if not (margin > 0 and math.isfinite(margin)):
        raise UsageError(f"the equivalence margin must be a positive number, got {margin}")
    if not 0 < alpha < 0.5:
        raise UsageError(f"alpha must be in (0, 0.5), got {alpha}")
    mean, std, df = float(d.mean()), float(d.std(ddof=1)), n - 1
    if np.all(d == d[0]):  # zero variance: t = +-inf, the test's limit decides
        inside_low, inside_high = mean > -margin, mean < margin
        return Tost(n, df, mean, 0.0, 0.0, margin, alpha, mean, mean, math.copysign(math.inf, mean + margin),
                    math.copysign(math.inf, mean - margin), 0.0 if inside_low else 1.0, 0.0 if inside_high else 1.0,
                    inside_low and inside_high,
                    degenerate=f"zero variance: all {n} differences are exactly {mean:.6g}, so the t statistics are "
                               f"infinite; the verdict is their limit (is {mean:.6g} inside +-{margin:.6g}?)")
    se = std / math.sqrt(n)
    t_lower, t_upper = (mean + margin) / se, (mean - margin) / se
    p_lower, p_upper = t_sf(t_lower, df), t_sf(-t_upper, df)  # P(T >= t-), P(T <= t+) = P(T >= -t+)
    half = t_quantile(1 - alpha, df) * se
    return Tost(n, df, mean, std, se, margin, alpha, mean - half, mean + half, t_lower, t_upper, p_lower, p_upper,
                bool(p_lower < alpha and p_upper < alpha))


def format_tost(result: Tost, margin_note: str) -> list[str]:
    """The test's lines for the command's report."""
    r = result
    pct = f"{r.confidence * 100:g}%"
    lines = [f"equivalence margin: +-{r.margin:.3g} ({margin_note}; --margin to change)",
             f"paired TOST on jax - torch, alpha {r.alpha:g}, n = {r.n} seeds, df = {r.df}: mean difference "
             f"{r.mean:+.3g}, std {r.std:.3g}, {pct} CI [{r.ci_low:+.3g}, {r.ci_high:+.3g}]",
             f"  H0: difference <= -margin   t = {r.t_lower:+.3f}   p = {r.p_lower:.3g}",
             f"  H0: difference >= +margin   t = {r.t_upper:+.3f}   p = {r.p_upper:.3g}"]
    if r.degenerate:
        lines.append(f"  note: {r.degenerate}")
    if r.equivalent:
        lines.append(f"verdict: EQUIVALENT within +-{r.margin:.3g} (both p < {r.alpha:g}; the {pct} CI lies inside "
                     "the margin)")
    else:
        where = ("lies entirely outside the margin: the difference exceeds it" if r.ci_low > r.margin
                 or r.ci_high < -r.margin else "reaches outside the margin")
        lines.append(f"verdict: NOT SHOWN EQUIVALENT within +-{r.margin:.3g} (TOST p = {r.p:.3g} >= {r.alpha:g}; "
                     f"the {pct} CI {where})")
    return lines
