"""The model families beyond the MLP: batch norm + dropout, denoising, tied weights, VAE, LSTM.

Each family: one optimizer step (every weight AND buffer after it), float32 and float64; a float64
training run; its own semantics checked against an independent torch formulation; bad inputs named.
Forward/loss/gradient parity of every preset is in test_parity.py, tutorial state dicts in test_presets.py.
"""

import copy

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from flax import nnx

import ae_jax
import ae_torch
import ae_torch.losses  # noqa: F401 (ae_torch.losses.* below; imported here, not by whichever test ran first)
import ae_torch.train  # noqa: F401
from ae_core import StateDictError, epoch_batches, get_spec, model_inputs
from ae_core.noise import batch_noise, epoch_noise
from ae_core.optim import OptimizerConfig
from ae_core import BatchNorm1d, GaussianHead, Linear, ModelSpec, SpecError, TiedLinear
from ae_core.training import TrainConfig
from ae_jax.layers import LSTM as JaxLSTM
from ae_jax.layers import BatchNorm as JaxBatchNorm
from ae_parity.parity import step_parity
from ae_parity.runner import Data, make_trainer

from helpers import assert_trees_all_close

FAMILIES = ["conv_bn", "denoise", "denoise_mask", "tied", "vae", "lstm"]


def batch(preset, train, n=32, dtype="float64"):
    idx = epoch_batches(seed=0, epoch=0, n=len(train), batch_size=n)[0]
    return model_inputs(get_spec(preset), train.images[idx], dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("preset", FAMILIES)
def test_one_adam_step_agrees_weights_and_buffers(preset, dtype, train):
    rows = step_parity(preset, dtype, batch(preset, train), OptimizerConfig("adam", lr=1e-3))
    names = {r.quantity for r in rows}
    assert names == {f"step {k}" for k in get_spec(preset).state_shapes()}  # parameters and buffers
    failures = [f"{r.quantity}: {r.max_abs:.2e}" for r in rows if not r.ok]
    assert not failures, failures


def test_batchnorm_running_statistics_after_steps_match_torch_both_modes():
    """ae_jax.BatchNorm vs torch.nn.BatchNorm1d/2d: 3 train steps (running mean, UNBIASED running var,
    num_batches_tracked), then eval mode on the running statistics. float64, to 1e-12."""
    rng = np.random.default_rng(0)
    for torch_cls, shape in ((torch.nn.BatchNorm1d, (16, 5)), (torch.nn.BatchNorm2d, (8, 5, 6, 7))):
        tb = torch_cls(5, momentum=0.1).double()
        with torch.no_grad():
            tb.weight.uniform_(0.5, 1.5)
            tb.bias.uniform_(-0.5, 0.5)
        jb = JaxBatchNorm(5, momentum=0.1, dtype=jnp.float64)
        jb.scale.set_value(jnp.asarray(tb.weight.detach().numpy()))
        jb.bias.set_value(jnp.asarray(tb.bias.detach().numpy()))
        nhwc = (lambda a: a.transpose(0, 2, 3, 1)) if len(shape) == 4 else (lambda a: a)
        for _ in range(3):
            x = rng.normal(2.0, 3.0, shape)
            yt = tb(torch.from_numpy(x)).detach().numpy()
            yj = np.asarray(jb(jnp.asarray(nhwc(x))))
            np.testing.assert_allclose(yj, nhwc(yt), atol=1e-12)
        np.testing.assert_allclose(np.asarray(jb.mean.get_value()), tb.running_mean.numpy(), atol=1e-12)
        np.testing.assert_allclose(np.asarray(jb.var.get_value()), tb.running_var.numpy(), atol=1e-12)
        assert int(jb.num_batches_tracked.get_value()) == int(tb.num_batches_tracked) == 3
        tb.eval()
        jb.use_running_average = True
        x = rng.normal(2.0, 3.0, shape)
        np.testing.assert_allclose(np.asarray(jb(jnp.asarray(nhwc(x)))),
                                   nhwc(tb(torch.from_numpy(x)).detach().numpy()), atol=1e-12)


def test_flax_batchnorm_mapped_naively_gets_the_running_statistics_wrong():
    """Why ae_jax has its own BatchNorm: nnx.BatchNorm(momentum=0.1) (torch's number) keeps 90% of the
    batch statistic instead of 10%, and even with momentum=0.9 it averages the BIASED variance."""
    x = np.random.default_rng(1).normal(2.0, 3.0, (16, 5))
    tb = torch.nn.BatchNorm1d(5).double()
    tb(torch.from_numpy(x))
    for momentum, what in ((0.1, "mean"), (0.9, "var")):
        fb = nnx.BatchNorm(5, momentum=momentum, param_dtype=jnp.float64, dtype=jnp.float64, rngs=nnx.Rngs(0))
        fb.mean = nnx.BatchStat(jnp.zeros(5, jnp.float64))  # its statistics are float32 whatever param_dtype says
        fb.var = nnx.BatchStat(jnp.ones(5, jnp.float64))
        fb(jnp.asarray(x))
        ours = tb.running_mean.numpy() if what == "mean" else tb.running_var.numpy()
        theirs = np.asarray(fb.mean.get_value() if what == "mean" else fb.var.get_value())
        assert np.abs(theirs - ours).max() > 1e-3, (momentum, what)  # the pitfall is real, not rounding
    # with momentum 0.9 the mean agrees; the variance is off by exactly the n/(n-1) factor on the batch part
    batch_var = x.var(axis=0)
    np.testing.assert_allclose(np.asarray(fb.var.get_value()), 0.9 + 0.1 * batch_var, rtol=1e-12)
    np.testing.assert_allclose(tb.running_var.numpy(), 0.9 + 0.1 * batch_var * 16 / 15, rtol=1e-12)


def test_dropout_with_a_supplied_mask_is_torch_dropout(train):
    """Units where the mask is 0 are zero, the others scaled by 1/(1-p); identity in eval mode; the
    mask is what torch's own nn.Dropout would apply (its nonzero pattern), both frameworks."""
    p = 0.2
    x = torch.from_numpy(batch("mlp9", train, 8))
    torch.manual_seed(3)
    reference = torch.nn.Dropout(p)(x)  # torch's own dropout ...
    mask = (reference != 0).double().numpy() * (x.numpy() != 0) + (x.numpy() == 0)  # ... its mask
    td = ae_torch.layers.Dropout(p)
    jd = ae_jax.layers.Dropout(p)
    got_t = td(x, torch.from_numpy(mask)).numpy()
    got_j = np.asarray(jd(jnp.asarray(x.numpy()), jnp.asarray(mask)))
    np.testing.assert_array_equal(got_t, reference.numpy())
    np.testing.assert_allclose(got_j, reference.numpy(), rtol=1e-15)
    td.eval()
    jd.eval()
    assert torch.equal(td(x, torch.from_numpy(mask)), x)
    assert np.array_equal(np.asarray(jd(jnp.asarray(x.numpy()))), x.numpy())


def test_train_mode_without_noise_is_refused_in_jax_and_random_in_torch(train):
    x = batch("denoise", train, 4)
    jm = ae_jax.build("denoise", dtype="float64", seed=0)
    with pytest.raises(ValueError, match="GaussianNoise in train mode needs its noise"):
        jm(jnp.asarray(x))
    jm.eval()  # eval mode: no corruption, no noise needed
    tm = ae_torch.build("denoise", dtype="float64", seed=0).eval()
    np.testing.assert_allclose(np.asarray(jm(jnp.asarray(x))), tm(torch.from_numpy(x)).detach().numpy(), atol=1e-13)


@pytest.mark.parametrize("preset", ["denoise", "denoise_mask"])
def test_denoising_loss_is_corrupted_input_against_clean_target(preset, train):
    """The loss the trainer minimises = MSE(plain_model(corrupt(x)), x), corruption computed here by hand."""
    spec = get_spec(preset)
    x = batch(preset, train, 16)
    noise = batch_noise(spec, 0, 16, "float64")["corrupt.0"]
    layer = spec.corrupt[0]
    if preset == "denoise":
        noisy = np.clip(x + layer.std * noise, 0, 1)
        assert 0.1 < np.mean(noisy != x)  # it did corrupt
    else:
        noisy = x * noise
        assert abs(np.mean(noise == 0) - layer.p) < 0.02  # ~p of the pixels dropped
    tm = ae_torch.build(spec, dtype="float64", seed=0)
    with torch.no_grad():
        plain = copy.deepcopy(tm).eval()
        expected = F.mse_loss(plain(torch.from_numpy(noisy)), torch.from_numpy(x)).item()
        got = ae_torch.losses.mse(tm.train(), torch.from_numpy(x), torch.from_numpy(x),
                                  {"corrupt.0": torch.from_numpy(noise)}).item()
    assert got == pytest.approx(expected, rel=1e-14)
    jm = ae_jax.build(spec, dtype="float64", seed=0)
    got_j = float(ae_jax.losses.mse(jm, jnp.asarray(x), jnp.asarray(x), {"corrupt.0": jnp.asarray(noise)}))
    assert got_j == pytest.approx(expected, rel=1e-12)


def test_tied_weights_are_one_parameter_whose_gradient_sums_both_uses(train):
    spec = get_spec("tied")
    assert "decoder.0.weight" not in spec.state_shapes() and "decoder.2.weight" not in spec.state_shapes()
    x = torch.from_numpy(batch("tied", train, 16))
    tm = ae_torch.build(spec, dtype="float64", seed=0)
    _, grads = ae_torch.train.loss_and_grad(tm, x)
    # independently: untie (two separate copies of each weight), then add the two gradients
    w0 = tm.encoder[0].weight.detach().clone().requires_grad_()
    w2 = tm.encoder[2].weight.detach().clone().requires_grad_()
    w0_dec = w0.detach().clone().requires_grad_()
    w2_dec = w2.detach().clone().requires_grad_()
    h = F.relu(F.linear(F.relu(F.linear(x, w0, tm.encoder[0].bias)), w2, tm.encoder[2].bias))
    out = torch.sigmoid(F.linear(F.relu(F.linear(h, w2_dec.t(), tm.decoder[0].bias)), w0_dec.t(), tm.decoder[2].bias))
    F.mse_loss(out, x).backward()
    np.testing.assert_allclose(grads["encoder.0.weight"], (w0.grad + w0_dec.grad).numpy(), rtol=1e-12)
    np.testing.assert_allclose(grads["encoder.2.weight"], (w2.grad + w2_dec.grad).numpy(), rtol=1e-12)
    assert np.abs(w0_dec.grad.numpy()).max() > 1e-3 * np.abs(w0.grad.numpy()).max()  # both uses matter
    # JAX: the same single parameter, the same summed gradient
    jm = ae_jax.build(spec, dtype="float64", seed=0)
    _, gj = ae_jax.train.loss_and_grad(jm, jnp.asarray(x.numpy()))  # canonical, like torch's
    assert sorted(gj) == sorted(grads)
    np.testing.assert_allclose(gj["encoder.0.weight"], grads["encoder.0.weight"], rtol=1e-10,
                               atol=1e-14)


def test_vae_terms_are_the_textbook_bce_and_kl(train):
    """Reconstruction = pytorch/examples' F.binary_cross_entropy(recon, x, reduction='sum') per example;
    KL = torch.distributions' KL(N(mu, sigma) || N(0, 1)) summed over the latent; both frameworks."""
    spec = get_spec("vae")
    x = batch("vae", train, 16)
    eps = batch_noise(spec, 0, 16, "float64")
    tm = ae_torch.build(spec, dtype="float64", seed=0)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        out = tm.outputs(xt, {k: torch.from_numpy(v) for k, v in eps.items()})
        terms = ae_torch.losses.vae_terms(tm, xt, xt, {k: torch.from_numpy(v) for k, v in eps.items()})
        recon = F.binary_cross_entropy(out["recon"], xt, reduction="sum").item() / 16
        q = torch.distributions.Normal(out["mu"], torch.exp(0.5 * out["logvar"]))
        kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum().item() / 16
        z = out["mu"] + torch.exp(0.5 * out["logvar"]) * torch.from_numpy(eps["encoder.2"])
        np.testing.assert_allclose(out["code"].numpy(), z.numpy(), rtol=1e-15)  # the reparameterisation
    assert terms["recon"].item() == pytest.approx(recon, rel=1e-10)
    assert terms["kl"].item() == pytest.approx(kl, rel=1e-10) and kl > 0
    jm = ae_jax.build(spec, dtype="float64", seed=0)
    tj = ae_jax.losses.vae_terms(jm, jnp.asarray(x), jnp.asarray(x), {k: jnp.asarray(v) for k, v in eps.items()})
    assert float(tj["recon"]) == pytest.approx(recon, rel=1e-10)
    assert float(tj["kl"]) == pytest.approx(kl, rel=1e-10)


def test_vae_samples_from_the_prior_agree():
    """Digits generated from z ~ N(0, I): the same z decodes to the same images in both frameworks."""
    spec = get_spec("vae")
    z = np.random.default_rng(0).standard_normal((8, spec.code_shape[0]))
    tm, jm = ae_torch.build(spec, dtype="float64", seed=0).eval(), ae_jax.build(spec, dtype="float64", seed=0)
    jm.eval()
    with torch.no_grad():
        expected = tm.decode(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(np.asarray(jm.decode(jnp.asarray(z))), expected, atol=1e-13)
    assert expected.shape == (8, 784) and 0 < expected.min() and expected.max() < 1


def test_lstm_matches_torch_lstm_and_keeps_both_biases():
    """ae_jax.LSTM vs torch.nn.LSTM(batch_first=True) on a random sequence, float64, via the rule table."""
    tl = torch.nn.LSTM(7, 5, batch_first=True).double()
    jl = JaxLSTM(7, 5, dtype=jnp.float64, rngs=nnx.Rngs(0))
    sd = {k: v.detach().numpy() for k, v in tl.state_dict().items()}
    ae_jax.load_state_dict(jl, sd)
    x = np.random.default_rng(0).normal(size=(3, 11, 7))
    expected = tl(torch.from_numpy(x))[0].detach().numpy()
    np.testing.assert_allclose(np.asarray(jl(jnp.asarray(x))), expected, atol=1e-13)
    assert_trees_all_close(ae_jax.state_dict(jl), sd, exact=True)  # both biases come back, bit for bit


def test_bad_state_dicts_for_the_new_layers_are_named_and_change_nothing():
    # a BatchNorm saved without running statistics (track_running_stats=False)
    spec = get_spec("conv_bn")
    sd = {k: v.detach().numpy() for k, v in ae_torch.build(spec, seed=1).state_dict().items()}
    no_stats = {k: v for k, v in sd.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    for model, load, dump in ((ae_torch.build(spec, seed=0), ae_torch.load_state_dict, ae_torch.state_dict),
                              (ae_jax.build(spec, seed=0), ae_jax.load_state_dict, ae_jax.state_dict)):
        before = dump(model)
        with pytest.raises(StateDictError) as info:
            load(model, no_stats)
        msg = str(info.value)
        assert "missing key 'encoder.1.running_mean'" in msg and "missing key 'decoder.5.num_batches_tracked'" in msg
        assert "BatchNorm running statistics are missing" in msg
        assert_trees_all_close(dump(model), before, exact=True)
    # a counter that is not an integer
    bad = dict(sd, **{"encoder.1.num_batches_tracked": np.float32(3.0)})
    with pytest.raises(StateDictError, match="encoder.1.num_batches_tracked: dtype float32 is not an integer"):
        ae_jax.load_state_dict(ae_jax.build(spec), bad)
    # an LSTM with another hidden size: every tensor of it named, with both shapes
    other = torch.nn.LSTM(28, 32, batch_first=True)
    lstm_sd = {k: v.detach().numpy() for k, v in ae_torch.build("lstm", seed=0).state_dict().items()}
    lstm_sd.update({f"encoder.0.{k}": v.detach().numpy() for k, v in other.state_dict().items()})
    jm = ae_jax.build("lstm", seed=0)
    before = ae_jax.state_dict(jm)
    with pytest.raises(StateDictError) as info:
        ae_jax.load_state_dict(jm, lstm_sd)
    assert "4 problem(s)" in str(info.value)
    assert "encoder.0.weight_ih_l0: shape (128, 28) != expected (256, 28)" in str(info.value)
    assert "encoder.0.weight_hh_l0: shape (128, 32) != expected (256, 64)" in str(info.value)
    assert_trees_all_close(ae_jax.state_dict(jm), before, exact=True)
    # a conv weight of the wrong rank
    conv_sd = dict(sd, **{"encoder.0.weight": sd["encoder.0.weight"][:, :, :, 0]})
    with pytest.raises(StateDictError, match=r"encoder.0.weight: shape \(16, 1, 3\) != expected \(16, 1, 3, 3\)"):
        ae_torch.load_state_dict(ae_torch.build(spec), conv_sd)


@pytest.mark.parametrize("make, message", [
    (lambda: ModelSpec("bad", encoder=(Linear(784, 8),), decoder=(TiedLinear("encoder.0", 8, 700),)),
     "cannot reuse the transpose"),
    (lambda: ModelSpec("bad", encoder=(Linear(784, 8),), decoder=(TiedLinear("encoder.3", 8, 784),)),
     "is None, not an encoder Linear"),
    (lambda: ModelSpec("bad", encoder=(GaussianHead(784, 8), Linear(8, 8)), decoder=(Linear(8, 784),)),
     "a GaussianHead must be the last encoder layer"),
    (lambda: ModelSpec("bad", encoder=(Linear(784, 8), BatchNorm1d(9)), decoder=(Linear(8, 784),)),
     "expected (9,)"),
    (lambda: BatchNorm1d(4, momentum=0.0), "momentum must be in (0, 1] (torch convention)"),
])
def test_bad_family_specs_are_named(make, message):
    with pytest.raises(SpecError) as info:
        make()
    assert message in str(info.value)


@pytest.mark.parametrize("preset, optimizer", [
    ("conv_bn", OptimizerConfig("adam", lr=2e-3)),
    ("denoise", OptimizerConfig("sgd", lr=0.1, momentum=0.9)),
    ("tied", OptimizerConfig("adamw", lr=2e-3)),
    ("vae", OptimizerConfig("adam", lr=1e-3)),
    ("lstm", OptimizerConfig("adam", lr=3e-3)),
])
def test_float64_training_runs_agree_to_1e_9(preset, optimizer, train):
    """2 epochs on 320 digits, every step's loss, final weights and buffers, eval loss: <= 1e-9.
    Dropout masks, corruption and VAE noise come from ae_core.noise, the same on both sides."""
    spec = get_spec(preset)
    x = model_inputs(spec, train.images[:320], "float64")
    data = Data(x, x[:64], "sample")
    config = TrainConfig(epochs=2, batch_size=32, optimizer=optimizer, dtype="float64", seed=5,
                         loss="vae" if spec.is_vae else "mse")
    runs = {fw: make_trainer(fw, preset, config, data) for fw in ("torch", "jax")}
    losses = {fw: np.concatenate([t.train_epoch(e) for e in range(2)]) for fw, t in runs.items()}
    assert np.abs(losses["torch"] - losses["jax"]).max() <= 1e-9 * max(1.0, np.abs(losses["torch"]).max())
    assert_trees_all_close(runs["jax"].model_state(), runs["torch"].model_state(), atol=1e-9)
    assert runs["jax"].evaluate() == pytest.approx(runs["torch"].evaluate(), rel=1e-9)
    assert losses["torch"][-5:].mean() < losses["torch"][:5].mean()  # it learns


def test_epoch_noise_is_a_function_of_seed_and_epoch():
    spec = get_spec("conv_bn")
    a, b = epoch_noise(spec, 1, 2, 3, 4), epoch_noise(spec, 1, 2, 3, 4)
    assert list(a) == ["encoder.7"] and a["encoder.7"].shape == (3, 4, 1568)
    assert_trees_all_close(a, b, exact=True)
    assert not np.array_equal(epoch_noise(spec, 1, 3, 3, 4)["encoder.7"], a["encoder.7"])
    assert epoch_noise(get_spec("mlp9"), 1, 2, 3, 4) == {}


@pytest.mark.parametrize("first, then", [("torch", "jax"), ("jax", "torch")])
def test_batchnorm_checkpoint_resumes_across_frameworks(first, then, train, tmp_path):
    """Running statistics and the int64 counters travel in the checkpoint: 1 epoch in one framework +
    1 resumed in the other = 2 uninterrupted epochs (float64, <= 1e-9)."""
    from ae_core.training import load_checkpoint
    from ae_parity.runner import CHECKPOINT, train_run

    spec = get_spec("conv_bn")
    x = model_inputs(spec, train.images[:192], "float64")
    data = Data(x, x[:64], "sample")
    config = dict(batch_size=32, optimizer=OptimizerConfig("adam", lr=2e-3), dtype="float64", seed=3)
    quiet = dict(data=data, log=lambda m: None)
    train_run(then, spec, TrainConfig(epochs=2, **config), tmp_path / "full", **quiet)
    train_run(first, spec, TrainConfig(epochs=1, **config), tmp_path / "split", **quiet)
    half = load_checkpoint(tmp_path / "split" / CHECKPOINT)
    assert half.model["encoder.1.num_batches_tracked"].dtype == np.int64
    assert half.model["encoder.1.num_batches_tracked"].shape == () and int(half.model["encoder.1.num_batches_tracked"]) == 6
    train_run(then, spec, TrainConfig(epochs=2, **config), tmp_path / "split", resume=True, **quiet)
    full, resumed = load_checkpoint(tmp_path / "full" / CHECKPOINT), load_checkpoint(tmp_path / "split" / CHECKPOINT)
    assert_trees_all_close(resumed.model, full.model, atol=1e-9)
    assert_trees_all_close(resumed.optim, full.optim, atol=1e-9)
    assert int(resumed.model["decoder.5.num_batches_tracked"]) == 12
