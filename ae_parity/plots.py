"""The pictures: reconstructions, loss curves, latent scatter (the demo), eval curves of many seeds (validate);
matplotlib, no screen needed.

A picture that compares the two frameworks draws them on the same axes and the same colour scale, and
shows their difference beside them (a ``|torch - jax|`` row of pixels, a ``|torch - jax|`` loss panel, the
per-digit distance between the codes): two nearly identical pictures side by side cannot show how close
they are, and two pictures on different scales can hide or invent a difference."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

REFERENCE = "torch"  # the framework whose codes define the latent picture's basis


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def one_per_digit(labels: np.ndarray, per_digit: int = 1) -> np.ndarray:
    """Indices of the first ``per_digit`` examples of each digit 0..9, in digit order."""
    return np.concatenate([np.flatnonzero(labels == d)[:per_digit] for d in range(10)])


def _pair(names, diff: tuple[str, str] | None) -> tuple[str, str] | None:
    """``diff`` when both of its names are drawn, else None (nothing to subtract)."""
    return diff if diff is not None and all(name in names for name in diff) else None


# ------------------------------------------------------------------------------- reconstructions ----
def reconstructions(path, originals: np.ndarray, rows: dict[str, np.ndarray], title: str,
                    diff: tuple[str, str] | None = ("torch", "jax")) -> Path:
    """A grid of 28x28 images: originals on the first row (if given), then one row per entry of ``rows``,
    every one of them on the same grey scale (0 black .. 1 white); then, when ``rows`` holds both names of
    ``diff``, a row of their per-pixel ``|a - b|`` on its own colour scale (0 .. the row's largest value)."""
    plt = _plt()
    images = {**({"original": originals} if originals is not None else {}), **rows}
    images = {name: np.asarray(v, dtype=np.float64).reshape(len(v), 28, 28) for name, v in images.items()}
    pair = _pair(rows, diff)
    n = len(next(iter(images.values())))
    n_rows = len(images) + (pair is not None)
    fig, axes = plt.subplots(n_rows, n, figsize=(n * 0.9 + 1.6, n_rows * 1.0 + 0.6), squeeze=False,
                             layout="constrained")
    for r, (name, row) in enumerate(images.items()):
        for c in range(n):
            gray = axes[r, c].imshow(row[c], cmap="gray", vmin=0, vmax=1)
        _row_label(axes[r, 0], name)
    fig.colorbar(gray, ax=axes[: len(images)].ravel().tolist(), label="pixel (every grey row: 0 to 1)",
                 ticks=[0, 0.5, 1], shrink=0.9, aspect=12 * len(images), pad=0.01)
    if pair is not None:
        a, b = pair
        d = np.abs(images[a] - images[b])
        top = float(d.max())
        for c in range(n):
            heat = axes[-1, c].imshow(d[c], cmap="magma", vmin=0, vmax=top if top > 0 else 1)
        _row_label(axes[-1, 0], f"|{a} - {b}|\n" + (f"max {top:.1e}" if top > 0 else "all 0"))
        bar = fig.colorbar(heat, ax=axes[-1].tolist(), shrink=0.9, aspect=12, pad=0.01)
        bar.set_label("own scale", fontsize=7)
        bar.formatter.set_powerlimits((-2, 2))
        bar.ax.tick_params(labelsize=7)
        bar.ax.yaxis.get_offset_text().set_fontsize(7)
        bar.update_ticks()
    for ax in axes.ravel():
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _row_label(ax, text: str) -> None:
    ax.set_ylabel(text, rotation=0, ha="right", va="center", fontsize=9)


# ------------------------------------------------------------------------------------ loss curves ----
_STYLES = {"torch": ("tab:red", "-", dict(marker="o", ms=9, mfc="none")),
           "jax": ("tab:blue", "--", dict(marker="x", ms=7))}


def loss_curves(path, runs: dict[str, dict], title: str, diff: tuple[str, str] | None = ("torch", "jax")) -> Path:
    """Per-step training loss (thin) and per-epoch eval loss (markers) of several runs on one plot; below it,
    when ``runs`` holds both names of ``diff``, their ``|a - b|`` per step and per epoch on a log scale."""
    plt = _plt()
    pair = _pair(runs, diff)
    if pair is None:
        fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    else:
        fig, (ax, dax) = plt.subplots(2, 1, figsize=(7, 6.2), sharex=True, height_ratios=(3, 2),
                                      layout="constrained")
    curves = {}
    for name, metrics in runs.items():
        color, ls, marker = _STYLES.get(name, (None, "-", dict(marker="o")))
        steps = np.concatenate([e["step_losses"] for e in metrics["epochs"]])
        ends = np.cumsum([e["steps"] for e in metrics["epochs"]])
        evals = np.array([e["eval_loss"] for e in metrics["epochs"]])
        curves[name] = steps, ends, evals
        ax.plot(np.arange(1, len(steps) + 1), steps, color=color, ls=ls, lw=0.8, alpha=0.8,
                label=f"{name} train (per step)")
        ax.plot(ends, evals, color=color, ls="none", label=f"{name} eval (per epoch)", **marker)
    _loss_axes(ax, "" if pair else "optimizer step", "loss", title, title_size=10)
    if pair is not None:
        (sa, ends, ea), (sb, _, eb) = curves[pair[0]], curves[pair[1]]
        steps, epochs = min(len(sa), len(sb)), min(len(ea), len(eb))
        step_diff, eval_diff = np.abs(sa[:steps] - sb[:steps]), np.abs(ea[:epochs] - eb[:epochs])
        _log_positive(dax, np.arange(1, steps + 1), step_diff, color="tab:purple", ls="none", marker=".", ms=3,
                      label="train loss (per step)")
        _log_positive(dax, ends[:epochs], eval_diff, color="black", ls="none", marker="D", ms=5,
                      label="eval loss (per epoch)")
        dax.set_title(f"|{pair[0]} - {pair[1]}| of the losses above: max {_fmt_max(step_diff)} per step, "
                      f"{_fmt_max(eval_diff)} eval", fontsize=9)
        _loss_axes(dax, "optimizer step", f"|{pair[0]} - {pair[1]}|", None, title_size=9)
    return _save(fig, path)


def _log_positive(ax, x, y, **kwargs) -> None:
    """``y`` on a log axis: its zeros (equal values) are left out of the line and said in the legend."""
    y = np.asarray(y, dtype=np.float64)
    zeros = int(np.sum(y == 0))
    label = kwargs.pop("label") + (f", {zeros} of {len(y)} exactly 0 (not drawn)" if zeros else "")
    ax.plot(x, np.where(y > 0, y, np.nan), label=label, **kwargs)


def _fmt_max(values: np.ndarray) -> str:
    top = float(np.max(values)) if len(values) else 0.0
    return f"{top:.1e}" if top > 0 else "0 (identical)"


def _loss_axes(ax, xlabel: str, ylabel: str, title: str | None, title_size: int) -> None:
    """Label a loss plot: log y axis (unless nothing on it is above 0), legend, title."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if any(np.nanmax(np.asarray(line.get_ydata(), dtype=float), initial=0.0) > 0 for line in ax.get_lines()):
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "identical: every difference is exactly 0", transform=ax.transAxes, ha="center")
    if title:
        ax.set_title(title, fontsize=title_size)
    ax.legend(fontsize=8)


def eval_curves(path, torch_curves: dict, jax_curves: dict, title: str) -> Path:
    """Per-epoch eval loss of many seeds in both frameworks: one line per seed, one colour per framework;
    below, ``jax - torch`` per seed present in both (the same seed is the same experiment: same start,
    batches and noise), the paired difference the equivalence test is about."""
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    paired = [s for s in torch_curves if s in jax_curves]
    if paired:
        fig, (ax, dax) = plt.subplots(2, 1, figsize=(7, 6.4), sharex=True, height_ratios=(3, 2),
                                      layout="constrained")
    else:
        fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
    for name, curves, color, ls in (("torch", torch_curves, "tab:red", "-"), ("jax", jax_curves, "tab:blue", "--")):
        for i, curve in enumerate(curves.values()):
            ax.plot(np.arange(1, len(curve) + 1), curve, color=color, ls=ls, lw=1.0, alpha=0.75, marker=".",
                    label=f"{name} ({len(curves)} seeds)" if i == 0 else None)
    _loss_axes(ax, "" if paired else "epoch", "eval loss (test split)", title, title_size=9)
    if paired:
        finals = []
        for i, seed in enumerate(paired):
            t, j = np.asarray(torch_curves[seed], float), np.asarray(jax_curves[seed], float)
            n = min(len(t), len(j))
            finals.append(j[n - 1] - t[n - 1])
            dax.plot(np.arange(1, n + 1), j[:n] - t[:n], color="tab:purple", lw=1.0, alpha=0.75, marker=".",
                     label=f"one line per seed ({len(paired)} seeds)" if i == 0 else None)
        dax.axhline(0.0, color="black", lw=0.8)
        finals = np.array(finals)
        dax.set_title(f"jax - torch, same seed; last epoch: mean {finals.mean():+.1e}, largest |jax - torch| "
                      f"{_fmt_max(np.abs(finals))}", fontsize=9)
        dax.xaxis.set_major_locator(MaxNLocator(integer=True))
        dax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 2))
        dax.set_xlabel("epoch")
        dax.set_ylabel("jax - torch")
        dax.legend(fontsize=8)
    return _save(fig, path)


# ---------------------------------------------------------------------------------- latent codes ----
@dataclass(frozen=True)
class Projection:
    """Codes of several frameworks placed in ONE coordinate system.

    ``points[name]``: (N, k) coordinates of that framework's codes; ``axes``: the k axis labels; ``basis``:
    what the coordinates are, for a title; ``fitted_on``: the framework whose codes the basis was fitted on
    (None: the codes as they are)."""

    points: dict[str, np.ndarray]
    axes: tuple[str, ...]
    basis: str
    fitted_on: str | None = None


def project_codes(codes: dict[str, np.ndarray], reference: str = REFERENCE) -> Projection:
    """Every framework's codes on the same axes: codes of 2 or 3 dims as they are; wider codes on the first
    two principal axes of the ``reference`` framework's codes (centred on its mean; ``numpy.linalg.svd``),
    the same basis for all. A basis fitted per framework would be free to mirror or rotate one picture
    against the other (a principal axis has no sign), even with identical codes."""
    flat = {name: _flat(z) for name, z in codes.items()}
    if reference not in flat:
        raise ValueError(f"no {reference!r} codes to fit the basis on (got {list(flat)})")
    ref = flat[reference]
    for name, z in flat.items():
        if z.shape != ref.shape:
            raise ValueError(f"{name} codes have shape {z.shape}, the {reference} codes {ref.shape}")
    dim = ref.shape[1]
    if dim <= 3:
        return Projection(flat, tuple(f"code dim {i + 1}" for i in range(dim)), f"the {dim}-d codes as they are")
    mean = ref.mean(axis=0)
    _, s, vt = np.linalg.svd(ref - mean, full_matrices=False)
    total = float(np.sum(s ** 2))
    share = s[:2] ** 2 / total if total > 0 else np.zeros(2)
    points = {name: (z - mean) @ vt[:2].T for name, z in flat.items()}
    return Projection(points, tuple(f"PC{i + 1} of the {reference} codes ({_percent(share[i])} of variance)"
                                    for i in range(2)),
                      f"PC1/PC2 of the {reference} codes ({dim}-d), one basis for every panel", reference)


def _percent(fraction: float) -> str:
    """A share as a percentage, with two significant digits below 10% (a collapsed axis is not "0%")."""
    if 0.995 <= fraction < 1:
        return f"{fraction:.1%}"
    return f"{fraction:.0%}" if fraction >= 0.095 or fraction == 0 else f"{100 * fraction:.2g}%"


def _flat(z) -> np.ndarray:
    """Codes as (N, code size) float64."""
    z = np.asarray(z, dtype=np.float64)
    return z.reshape(len(z), -1)


def code_distances(codes: dict[str, np.ndarray], name: str, reference: str = REFERENCE) -> np.ndarray:
    """``||z_name - z_reference||`` per example, in the full code space (not the picture's projection)."""
    return np.linalg.norm(_flat(codes[name]) - _flat(codes[reference]), axis=1)


def latent_scatter(path, codes: dict[str, np.ndarray], labels: np.ndarray, title: str,
                   reference: str = REFERENCE) -> Path:
    """Codes coloured by digit, one panel per framework, all on the same axes (:func:`project_codes`: 3-D
    for 3-d codes, else the ``reference`` codes' first two principal axes) with the same limits; then, for
    each other framework, a panel of the per-digit distance to the ``reference`` codes (drawn at the
    ``reference`` positions, log colour scale; its max and median in the title)."""
    from matplotlib.colors import LogNorm

    plt = _plt()
    proj = project_codes(codes, reference)
    k = len(proj.axes)
    three_d = k == 3
    labels = np.asarray(labels)
    if k == 1:  # 1-d codes: the code against the digit
        proj = Projection({n: np.column_stack([p[:, 0], labels]) for n, p in proj.points.items()},
                          (proj.axes[0], "digit"), proj.basis, proj.fitted_on)
    others = [name for name in codes if name != reference]
    n_panels = len(codes) + len(others)
    fig = plt.figure(figsize=(4.6 * n_panels + 1.2, 5.0), layout="constrained")
    every = np.concatenate(list(proj.points.values()))
    lo, hi = every.min(axis=0), every.max(axis=0)
    pad = 0.04 * np.where(hi > lo, hi - lo, 1.0)
    limits = list(zip(lo - pad, hi + pad))

    def panel(i: int):
        ax = fig.add_subplot(1, n_panels, i + 1, **({"projection": "3d"} if three_d else {}))
        if three_d:  # a smaller box: the axis labels stay inside the panel, clear of the next one
            ax.set_box_aspect(None, zoom=0.85)
        for axis, label, lim in zip("xyz", proj.axes, limits):
            getattr(ax, f"set_{axis}lim")(*lim)
            getattr(ax, f"set_{axis}label")(label, fontsize=8)
        ax.tick_params(labelsize=7)
        return ax

    digit_axes = []
    for i, (name, p) in enumerate(proj.points.items()):
        ax = panel(i)
        sc = ax.scatter(*p.T, c=labels, cmap="tab10", s=4, vmin=-0.5, vmax=9.5)
        ax.set_title(f"{name} codes" + (" (the basis is fitted on these)" if name == proj.fitted_on else ""),
                     fontsize=9)
        digit_axes.append(ax)
    fig.colorbar(sc, ax=digit_axes, ticks=range(10), label="digit", shrink=0.8)
    ref_points, ref_codes = proj.points[reference], _flat(codes[reference])
    scale = float(np.median(np.linalg.norm(ref_codes, axis=1)))  # how long a code is, for the distances' sake
    for j, name in enumerate(others):
        ax = panel(len(codes) + j)
        d = code_distances(codes, name, reference)
        positive = d[d > 0]
        order = np.argsort(d, kind="stable")  # the largest distances drawn last, on top
        if positive.size:
            vmin, vmax = float(positive.min()), float(d.max())
            norm = LogNorm(vmin=min(vmin, vmax / 10), vmax=vmax)
            sc = ax.scatter(*ref_points[order].T, c=np.maximum(d[order], norm.vmin), cmap="viridis", norm=norm, s=4)
            bar = fig.colorbar(sc, ax=ax, shrink=0.8)
            bar.set_label(f"||z_{name} - z_{reference}|| (whole {ref_codes.shape[1]}-d code, log scale)"
                          + (", 0 drawn as the lowest" if positive.size < d.size else ""), fontsize=8)
            stats = f"max {vmax:.1e}, median {float(np.median(d)):.1e}"
        else:
            ax.scatter(*ref_points.T, color="tab:green", s=4)
            stats = "max 0, median 0: identical codes"
        ax.set_title(f"distance {name} to {reference}, per digit: {stats}\n(at the {reference} positions; "
                     f"median ||z_{reference}|| {scale:.2g})", fontsize=9)
    fig.suptitle(f"{title}\naxes: {proj.basis}", fontsize=10)
    return _save(fig, path)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path
