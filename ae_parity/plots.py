"""The pictures: reconstructions, loss curves, latent scatter (the demo), eval curves of many seeds (validate);
matplotlib, no screen needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def one_per_digit(labels: np.ndarray, per_digit: int = 1) -> np.ndarray:
    """Indices of the first ``per_digit`` examples of each digit 0..9, in digit order."""
    return np.concatenate([np.flatnonzero(labels == d)[:per_digit] for d in range(10)])


def reconstructions(path, originals: np.ndarray, rows: dict[str, np.ndarray], title: str) -> Path:
    """A grid: originals on the first row (if given), then one row per entry of ``rows`` (28x28 images)."""
    plt = _plt()
    all_rows = {**({"original": originals} if originals is not None else {}), **rows}
    n = len(next(iter(all_rows.values())))
    fig, axes = plt.subplots(len(all_rows), n, figsize=(n * 0.9, len(all_rows) * 1.0 + 0.4), squeeze=False)
    for r, (name, images) in enumerate(all_rows.items()):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(np.asarray(images[c]).reshape(28, 28), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def loss_curves(path, runs: dict[str, dict], title: str) -> Path:
    """Per-step training loss (thin) and per-epoch eval loss (markers) of several runs on one plot."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    styles = {"torch": ("tab:red", "-", dict(marker="o", ms=9, mfc="none")),
              "jax": ("tab:blue", "--", dict(marker="x", ms=7))}
    for name, metrics in runs.items():
        color, ls, marker = styles.get(name, (None, "-", dict(marker="o")))
        steps = np.concatenate([e["step_losses"] for e in metrics["epochs"]])
        ax.plot(np.arange(1, len(steps) + 1), steps, color=color, ls=ls, lw=0.8, alpha=0.8,
                label=f"{name} train (per step)")
        ends = np.cumsum([e["steps"] for e in metrics["epochs"]])
        ax.plot(ends, [e["eval_loss"] for e in metrics["epochs"]], color=color, ls="none",
                label=f"{name} eval (per epoch)", **marker)
    return _log_loss_axes(fig, ax, path, "optimizer step", "loss", title, title_size=10)


def _log_loss_axes(fig, ax, path, xlabel: str, ylabel: str, title: str, title_size: int) -> Path:
    """Label a loss plot (log y axis, legend), lay it out and save it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_yscale("log")
    ax.set_title(title, fontsize=title_size)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def eval_curves(path, torch_curves: dict, jax_curves: dict, title: str) -> Path:
    """Per-epoch eval loss of many seeds in both frameworks: one line per seed, one colour per framework."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, curves, color, ls in (("torch", torch_curves, "tab:red", "-"), ("jax", jax_curves, "tab:blue", "--")):
        for i, curve in enumerate(curves.values()):
            ax.plot(np.arange(1, len(curve) + 1), curve, color=color, ls=ls, lw=1.0, alpha=0.75, marker=".",
                    label=f"{name} ({len(curves)} seeds)" if i == 0 else None)
    return _log_loss_axes(fig, ax, path, "epoch", "eval loss (test split)", title, title_size=9)


def latent_scatter(path, codes: dict[str, np.ndarray], labels: np.ndarray, title: str) -> Path:
    """Codes coloured by digit, one panel per framework: 3-D for 3-d codes, else the first two principal axes."""
    plt = _plt()
    dim = next(iter(codes.values())).shape[1]
    three_d = dim == 3
    fig = plt.figure(figsize=(5.5 * len(codes), 5))
    for i, (name, z) in enumerate(codes.items()):
        z = np.asarray(z, dtype=np.float64)
        if three_d:
            ax = fig.add_subplot(1, len(codes), i + 1, projection="3d")
            sc = ax.scatter(z[:, 0], z[:, 1], z[:, 2], c=labels, cmap="tab10", s=4, vmin=-0.5, vmax=9.5)
            axis_note = "code dims 1-3"
        else:
            if dim > 2:
                centered = z - z.mean(axis=0)
                _, _, vt = np.linalg.svd(centered, full_matrices=False)
                z = centered @ vt[:2].T
                axis_note = f"first 2 principal axes of the {dim}-d codes"
            else:
                axis_note = "code dims 1-2"
            ax = fig.add_subplot(1, len(codes), i + 1)
            sc = ax.scatter(z[:, 0], z[:, 1], c=labels, cmap="tab10", s=4, vmin=-0.5, vmax=9.5)
        ax.set_title(f"{name}: {axis_note}", fontsize=9)
    fig.colorbar(sc, ax=fig.axes, ticks=range(10), label="digit", shrink=0.8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path
