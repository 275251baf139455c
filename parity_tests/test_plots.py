"""The pictures that compare the two frameworks put them on the same axes and the same colour scales, with
their difference beside them: one latent basis (fitted on the torch codes) for every panel, a per-digit code
distance panel, a |torch - jax| reconstruction row, a |torch - jax| loss panel, a paired eval difference.

The figures are read back as data (the points, limits, images and titles matplotlib was given), not as
pixels: ``plots._save`` is replaced by a function that keeps the figure."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ae_parity import plots  # noqa: E402


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions would have saved, in order (nothing is written)."""
    kept = []

    def keep(fig, path):
        kept.append(fig)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    yield kept
    import matplotlib.pyplot as plt

    for fig in kept:
        plt.close(fig)


def _codes(n=500, dim=9, seed=0):
    """Codes with well separated principal axes, none of them a code dimension, off-centre."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    return (rng.standard_normal((n, dim)) * np.geomspace(3.0, 0.1, dim)) @ q.T + rng.standard_normal(dim)


def _torch_axes(z):
    """The torch codes' mean and first two principal directions (what the picture's basis must be)."""
    mean = z.mean(axis=0)
    _, _, vt = np.linalg.svd(z - mean, full_matrices=False)
    return mean, vt[0], vt[1]


def _rotated_in_pc_plane(z):
    """``z`` turned by 90 degrees in the plane of its first two principal axes (PC1 -> PC2 -> -PC1)."""
    mean, v1, v2 = _torch_axes(z)
    c = z - mean
    a, b = c @ v1, c @ v2
    return mean + c - np.outer(a, v1) - np.outer(b, v2) + np.outer(a, v2) - np.outer(b, v1)


def _mirrored_along_pc1(z):
    mean, v1, _ = _torch_axes(z)
    c = z - mean
    return mean + c - 2 * np.outer(c @ v1, v1)


def _panels(fig):
    """{title: axes} of the panels that draw points (colour bars left out)."""
    return {ax.get_title(): ax for ax in fig.axes if ax.collections and ax.get_title()}


def _panel(fig, start):
    (ax,) = [ax for title, ax in _panels(fig).items() if title.startswith(start)]
    return ax


def _xy(ax):
    return np.asarray(ax.collections[0].get_offsets(), dtype=np.float64)


# ------------------------------------------------------------------------------ the projection ----
def test_identical_codes_land_on_identical_points_in_one_named_basis():
    z = _codes()
    p = plots.project_codes({"torch": z, "jax": z.copy()})
    np.testing.assert_array_equal(p.points["jax"], p.points["torch"])
    assert p.points["torch"].shape == (len(z), 2) and p.fitted_on == "torch"
    assert p.axes[0].startswith("PC1 of the torch codes") and p.axes[1].startswith("PC2 of the torch codes")
    assert "PC1/PC2 of the torch codes" in p.basis


@pytest.mark.parametrize("transform, expected", [
    (_rotated_in_pc_plane, lambda pt: np.column_stack([-pt[:, 1], pt[:, 0]])),
    (_mirrored_along_pc1, lambda pt: np.column_stack([-pt[:, 0], pt[:, 1]])),
    (lambda z: z + 0.5 * _torch_axes(z)[1], lambda pt: pt + [0.5, 0.0]),
], ids=["rotated", "mirrored", "shifted"])
def test_jax_codes_are_placed_with_the_torch_basis_not_their_own(transform, expected):
    """Codes the JAX side got rotated, mirrored or shifted against the torch codes show up where they are:
    a basis fitted on the JAX codes themselves would have drawn the same picture as for the torch codes
    (its principal axes turn and flip with the codes, and it is centred on their own mean)."""
    zt = _codes()
    p = plots.project_codes({"torch": zt, "jax": transform(zt)})
    np.testing.assert_allclose(p.points["jax"], expected(p.points["torch"]), atol=1e-9)
    assert np.abs(p.points["jax"] - p.points["torch"]).max() > 0.2  # visibly apart


def test_codes_close_to_the_torch_codes_stay_close_whatever_the_noise():
    """Noise of 1e-6 moves every point by at most its size: no principal axis can flip sign between panels."""
    zt = _codes()
    zj = zt + 1e-6 * np.random.default_rng(1).standard_normal(zt.shape)
    p = plots.project_codes({"torch": zt, "jax": zj})
    assert np.abs(p.points["jax"] - p.points["torch"]).max() <= 1e-6 * np.sqrt(zt.shape[1]) * 3


def test_three_and_two_dimensional_codes_are_drawn_as_they_are():
    z3 = _codes(dim=3)
    p = plots.project_codes({"torch": z3, "jax": -z3})
    np.testing.assert_array_equal(p.points["jax"], -z3)
    assert p.axes == ("code dim 1", "code dim 2", "code dim 3") and p.fitted_on is None
    assert plots.project_codes({"torch": z3[:, :2], "jax": z3[:, :2]}).axes == ("code dim 1", "code dim 2")


def test_a_projection_needs_the_reference_codes_and_equal_shapes():
    z = _codes()
    with pytest.raises(ValueError, match="no 'torch' codes"):
        plots.project_codes({"jax": z})
    with pytest.raises(ValueError, match="shape"):
        plots.project_codes({"torch": z, "jax": z[:10]})


# ------------------------------------------------------------------------------ latent picture ----
def test_latent_picture_draws_both_frameworks_on_the_torch_basis_with_the_same_limits(figures, tmp_path):
    zt = _codes()
    zj = _rotated_in_pc_plane(zt)
    labels = np.arange(len(zt)) % 10
    plots.latent_scatter(tmp_path / "latent.png", {"torch": zt, "jax": zj}, labels, "codes")
    (fig,) = figures
    torch_ax, jax_ax = _panel(fig, "torch"), _panel(fig, "jax")
    pt = _xy(torch_ax)
    np.testing.assert_allclose(_xy(jax_ax), np.column_stack([-pt[:, 1], pt[:, 0]]), atol=1e-9)
    assert torch_ax.get_xlim() == jax_ax.get_xlim() and torch_ax.get_ylim() == jax_ax.get_ylim()
    for ax in (torch_ax, jax_ax):  # every point inside the shared limits
        xy = _xy(ax)
        assert ax.get_xlim()[0] < xy[:, 0].min() and xy[:, 0].max() < ax.get_xlim()[1]
        assert ax.get_ylim()[0] < xy[:, 1].min() and xy[:, 1].max() < ax.get_ylim()[1]
        assert ax.get_xlabel().startswith("PC1 of the torch codes")
    assert "PC1/PC2 of the torch codes" in fig._suptitle.get_text()


def test_latent_picture_shows_the_per_digit_distance_with_its_max_and_median(figures, tmp_path):
    zt = _codes()
    zj = zt + 1e-6 * np.random.default_rng(2).standard_normal(zt.shape)
    plots.latent_scatter(tmp_path / "latent.png", {"torch": zt, "jax": zj}, np.arange(len(zt)) % 10, "codes")
    (fig,) = figures
    ax = _panel(fig, "distance jax to torch")
    d = np.linalg.norm(zj - zt, axis=1)
    assert f"max {d.max():.1e}" in ax.get_title() and f"median {np.median(d):.1e}" in ax.get_title()
    colours = np.asarray(ax.collections[0].get_array())
    np.testing.assert_allclose(np.sort(colours), np.sort(d), rtol=1e-12)  # the full-code distance, every digit
    assert ax.get_xlim() == _panel(fig, "torch").get_xlim()


def test_latent_picture_of_identical_codes_says_so(figures, tmp_path):
    z = _codes()
    plots.latent_scatter(tmp_path / "latent.png", {"torch": z, "jax": z.copy()}, np.arange(len(z)) % 10, "t")
    (fig,) = figures
    np.testing.assert_array_equal(_xy(_panel(fig, "jax")), _xy(_panel(fig, "torch")))
    assert "identical codes" in _panel(fig, "distance").get_title()


def test_latent_picture_of_3d_codes_uses_one_box_for_all_panels(figures, tmp_path):
    z = _codes(dim=3)
    plots.latent_scatter(tmp_path / "latent.png", {"torch": z, "jax": z * [1, 1, -1]}, np.arange(len(z)) % 10, "t")
    (fig,) = figures
    axes = list(_panels(fig).values())
    assert len(axes) == 3 and all(ax.name == "3d" for ax in axes)
    for get in ("get_xlim", "get_ylim", "get_zlim"):
        assert len({getattr(ax, get)() for ax in axes}) == 1


def test_latent_picture_of_real_codes_from_both_frameworks(data_dir, tmp_path):
    """The sample's test digits through the same (seeded, untrained) mlp9 in torch and in JAX, float32:
    the panels coincide to float32 rounding, and the file is a PNG."""
    import jax.numpy as jnp
    import torch

    import ae_jax
    import ae_torch
    from ae_core import get_spec, mnist, model_inputs
    from ae_jax.train import encode_decode

    test = mnist.load("test", "sample", data_dir)
    x = model_inputs(get_spec("mlp9"), test.images, "float32")
    tm, jm = ae_torch.build("mlp9", seed=3).eval(), ae_jax.build("mlp9", seed=3)
    jm.eval()
    with torch.no_grad():
        zt = tm.encode(torch.from_numpy(x)).numpy()
    zj = np.asarray(encode_decode(jm, jnp.asarray(x))[0])
    p = plots.project_codes({"torch": zt, "jax": zj})
    spread = np.ptp(p.points["torch"], axis=0)
    assert np.all(np.abs(p.points["jax"] - p.points["torch"]) <= 1e-4 * spread)
    path = plots.latent_scatter(tmp_path / "latent.png", {"torch": zt, "jax": zj}, test.labels, "mlp9, untrained")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------- reconstructions ----
def test_reconstructions_share_one_grey_scale_and_show_the_difference_on_its_own(figures, tmp_path, train):
    originals = train.images[:10].reshape(10, 784) / 255.0
    rt = np.clip(originals + 0.1, 0, 1)
    rj = rt + np.linspace(0, 3e-7, 784)  # a float32-sized difference
    plots.reconstructions(tmp_path / "r.png", originals, {"torch": rt, "jax": rj}, "t")
    (fig,) = figures
    rows = {}
    for ax in fig.axes:
        if ax.images and ax.get_ylabel():
            rows[ax.get_ylabel().split("\n")[0]] = ax
    assert list(rows) == ["original", "torch", "jax", "|torch - jax|"]
    grey = [ax for ax in fig.axes if ax.images and ax.images[0].get_cmap().name == "gray"]
    assert len(grey) == 30 and {ax.images[0].get_clim() for ax in grey} == {(0, 1)}
    heat = [ax for ax in fig.axes if ax.images and ax.images[0].get_cmap().name != "gray"]
    assert len(heat) == 10 and len({ax.images[0].get_clim() for ax in heat}) == 1  # one scale for the row
    np.testing.assert_allclose(heat[0].images[0].get_array(), np.abs(rt[0] - rj[0]).reshape(28, 28))
    vmax = heat[0].images[0].get_clim()[1]
    assert vmax == pytest.approx(np.abs(rt - rj).max()) and f"max {vmax:.1e}" in rows["|torch - jax|"].get_ylabel()


def test_reconstructions_without_both_frameworks_have_no_difference_row(figures, tmp_path, train):
    originals = train.images[:10].reshape(10, 784) / 255.0
    plots.reconstructions(tmp_path / "r.png", originals, {"trained in torch": originals}, "t")
    (fig,) = figures
    assert len([ax for ax in fig.axes if ax.images]) == 20


# -------------------------------------------------------------------------------- loss curves ----
def _metrics(step_losses, eval_losses):
    return {"epochs": [{"step_losses": list(s), "steps": len(s), "eval_loss": e}
                       for s, e in zip(step_losses, eval_losses)]}


def test_loss_curves_show_the_difference_of_the_two_runs(figures, tmp_path):
    t = np.geomspace(0.2, 0.05, 20).reshape(2, 10)
    j = t.copy()
    j[0, 3] += 2e-8
    j[1, 7] -= 5e-8
    plots.loss_curves(tmp_path / "l.png", {"torch": _metrics(t, [0.1, 0.06]), "jax": _metrics(j, [0.1, 0.06 + 1e-8])},
                      "t")
    (fig,) = figures
    top, diff = fig.axes
    assert diff.get_yscale() == "log" and top.get_shared_x_axes().joined(top, diff)
    steps = diff.get_lines()[0]
    np.testing.assert_allclose(np.nan_to_num(np.asarray(steps.get_ydata(), float)),
                               np.abs(t - j).ravel(), rtol=1e-6)
    assert "max 5.0e-08 per step, 1.0e-08 eval" in diff.get_title()
    assert "18 of 20 exactly 0" in steps.get_label()


def test_loss_curves_of_identical_runs_say_so_without_a_log_of_zero(figures, tmp_path):
    t = np.geomspace(0.2, 0.05, 10).reshape(1, 10)
    plots.loss_curves(tmp_path / "l.png", {"torch": _metrics(t, [0.1]), "jax": _metrics(t, [0.1])}, "t")
    (fig,) = figures
    assert fig.axes[1].get_yscale() == "linear" and "identical" in fig.axes[1].get_title()


def test_eval_curves_pair_the_seeds_and_draw_jax_minus_torch(figures, tmp_path):
    torch_curves = {0: [0.1, 0.08, 0.07], 1: [0.11, 0.09, 0.075]}
    jax_curves = {0: [0.1, 0.081, 0.069], 1: [0.11, 0.09, 0.076]}
    plots.eval_curves(tmp_path / "e.png", torch_curves, jax_curves, "t")
    (fig,) = figures
    top, diff = fig.axes
    assert top.get_yscale() == "log"
    lines = [line for line in diff.get_lines() if len(line.get_xdata()) == 3]
    np.testing.assert_allclose(lines[0].get_ydata(), np.subtract(jax_curves[0], torch_curves[0]), atol=1e-15)
    np.testing.assert_allclose(lines[1].get_ydata(), np.subtract(jax_curves[1], torch_curves[1]), atol=1e-15)
    assert "jax - torch" in diff.get_title()
