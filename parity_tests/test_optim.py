"""The optimizer table: each torch optimizer and its optax counterpart step identically."""

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

from ae_core import get_spec, model_inputs
from ae_core.optim import OptimizerConfig
from ae_core.training import TrainConfig
from ae_parity.parity import step_parity
from ae_parity.runner import Data, make_trainer

from helpers import assert_trees_all_close

CASES = {
    "adam": OptimizerConfig("adam", lr=1e-3),
    "adam coupled L2": OptimizerConfig("adam", lr=1e-3, weight_decay=1e-2),
    "adamw default decay": OptimizerConfig("adamw", lr=1e-3),
    "adamw": OptimizerConfig("adamw", lr=2e-3, weight_decay=0.1, betas=(0.8, 0.99), eps=1e-6),
    "sgd": OptimizerConfig("sgd", lr=0.1),
    "sgd momentum": OptimizerConfig("sgd", lr=0.05, momentum=0.9),
    "sgd nesterov + L2": OptimizerConfig("sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
}


@pytest.fixture(scope="module")
def data(train):
    x = model_inputs(get_spec("mlp16"), train.images[:640], "float64")
    return Data(x, x[:64], "sample")


def run(framework, config, data, epochs=1):
    trainer = make_trainer(framework, "mlp16", TrainConfig(epochs=epochs, batch_size=32, optimizer=config,
                                                           dtype="float64", seed=3), data)
    losses = np.concatenate([trainer.train_epoch(e) for e in range(epochs)])
    return trainer, losses


@pytest.mark.parametrize("case", sorted(CASES))
def test_twenty_steps_agree_in_float64(case, data):
    t, lt = run("torch", CASES[case], data)
    j, lj = run("jax", CASES[case], data)
    np.testing.assert_allclose(lj, lt, rtol=1e-12)
    assert_trees_all_close(j.model_state(), t.model_state(), atol=1e-12)
    assert_trees_all_close(j.optimizer_state(), t.optimizer_state(), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_float32_step_passes_the_float64_reference_criterion(case, train):
    x = model_inputs(get_spec("mlp9"), train.images[:64], "float64")
    rows = step_parity(get_spec("mlp9"), "float32", x, CASES[case])
    failures = [f"{r.quantity}: jax {r.jax_err:.2e} torch {r.torch_err:.2e}" for r in rows if not r.ok]
    assert not failures, failures
    assert all(r.kind == "ref" for r in rows)
    assert all((r.elementwise_ok is not None) == (CASES[case].name != "sgd") for r in rows if "running" not in r.quantity)


def test_adam_bias_corrections_are_as_accurate_as_torchs_in_float32():
    """optax's scale_by_adam evaluates 1 - b2**t in float32 (float32(0.999) = 0.99899995: 4.7e-5 relative
    off the 1 - b2 that scales the moment), so its float32 step lands ~7e-6 relative (57 ulps) from the
    exact step; ae_jax's transformation computes the corrections as -expm1(t log b), within an ulp, as
    torch does in Python floats. Reference: the closed form of Adam's first steps in float64."""
    from ae_jax.optim import scale_by_torch_adam

    rng = np.random.default_rng(0)
    grads = [(rng.standard_normal(4096) * 1e-3).astype(np.float32) for _ in range(3)]
    m = v = np.zeros(4096)
    exact = np.zeros(4096)
    for t, g in enumerate(grads, start=1):  # Adam in float64, by hand
        g64 = g.astype(np.float64)
        m, v = 0.9 * m + 0.1 * g64, 0.999 * v + 0.001 * g64 * g64
        exact -= 1e-3 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    def steps(tx):
        tx = optax.chain(tx, optax.scale_by_learning_rate(1e-3))
        w = jnp.zeros(4096, jnp.float32)
        state = tx.init(w)
        for g in grads:
            u, state = tx.update(jnp.asarray(g), state, w)
            w = optax.apply_updates(w, u)
        return np.asarray(w, np.float64), state

    ulps = np.spacing(np.float32(np.abs(exact).max()))
    with jax.enable_x64(False):  # as a float32 run has it (the suite runs with x64 on, for its float64 cases)
        optax_w, _ = steps(optax.scale_by_adam(0.9, 0.999, 1e-8))
        ours, state = steps(scale_by_torch_adam(0.9, 0.999, 1e-8))
    assert np.abs(ours - exact).max() / ulps <= 4
    assert np.abs(optax_w - exact).max() / ulps >= 20  # optax's float32 bias corrections
    # and the same numbers whether or not x64 is on: nothing in the step depends on the process's settings
    np.testing.assert_array_equal(steps(scale_by_torch_adam(0.9, 0.999, 1e-8))[0], ours)
    assert type(state[0]) is optax.ScaleByAdamState  # the same state as optax's: checkpoints unchanged


def test_torch_defaults_are_ours():
    """Unset weight decay takes torch's default for that optimizer (AdamW 1e-2, not optax's 1e-4)."""
    for name, cls in (("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)):
        torch_default = inspect.signature(cls).parameters["weight_decay"].default
        assert OptimizerConfig(name).weight_decay == torch_default
    assert inspect.signature(optax.adamw).parameters["weight_decay"].default != 1e-2  # the trap


def test_the_wrong_mappings_fail(data):
    """optax.adamw for torch Adam(weight_decay) (coupled) and optax's AdamW default decay both diverge."""
    t, _ = run("torch", CASES["adam coupled L2"], data)
    j, _ = run("jax", CASES["adam coupled L2"], data)
    wrong = make_trainer("jax", "mlp16", TrainConfig(batch_size=32, optimizer=CASES["adam coupled L2"],
                                                     dtype="float64", seed=3), data,
                         tx=optax.adamw(1e-3, weight_decay=1e-2))  # the wrong mapping for torch Adam(weight_decay)
    wrong.train_epoch(0)
    gap = max(np.abs(wrong.model_state()[k] - v).max() for k, v in t.model_state().items())
    assert gap > 1e-5  # measured ~1e-4: coupled vs decoupled decay is a real difference
    right = max(np.abs(j.model_state()[k] - v).max() for k, v in t.model_state().items())
    assert right < 1e-12


def test_mse_is_not_optax_l2_loss():
    a, b = jnp.array([1.0, 2.0, 4.0]), jnp.array([0.0, 0.0, 0.0])
    from ae_jax.losses import mse

    class Identity:  # a "model" whose reconstruction is its input
        def outputs(self, x, noise=None):
            return {"recon": x}

    value = mse(Identity(), a, b)
    assert float(value) == pytest.approx(float(torch.nn.MSELoss()(torch.tensor([1.0, 2.0, 4.0]), torch.zeros(3))))
    assert float(optax.l2_loss(a, b).mean()) == pytest.approx(0.5 * float(value))


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="rmsprop"), "unknown optimizer 'rmsprop'"),
    (dict(lr=0), "lr must be > 0"),
    (dict(lr=1e-3, weight_decay=-1), "weight_decay must be >= 0"),
    (dict(name="sgd", nesterov=True), "nesterov needs the sgd optimizer with momentum > 0"),
    (dict(name="adam", momentum=0.9), "momentum is an sgd setting"),
    (dict(betas=(0.9, 1.0)), "betas must be in [0, 1)"),
])
def test_bad_optimizer_settings_are_named(kwargs, message):
    with pytest.raises(ValueError) as info:
        OptimizerConfig(**kwargs)
    assert message in str(info.value)


def test_adam_first_step_bound_explains_near_eps_gradients(train):
    """Where |g| ~ eps, Adam's g/(|g|+eps) amplifies gradient differences: the bound is derived from the
    gradient TARGET, so it is tight for well-conditioned entries and wide only near eps."""
    from ae_parity.parity import adam_first_step_bound

    g = np.array([1e-2, 1e-4, 1e-8, 0.0])
    bound = adam_first_step_bound(g, lr=1e-3, eps=1e-8, grad_tol_rel=1e-5, tol=1e-6)
    assert bound[0] == pytest.approx(1e-6, rel=1e-6)  # large gradient: just the target
    assert bound[2] > 1e-6 and bound[3] > bound[2]  # near and at zero: what the gradient target admits
    # and the real thing: a conv step where half of one layer's gradients are below 1e-7
    x = model_inputs(get_spec("conv"), train.images[:32], "float64")
    rows = step_parity(get_spec("conv"), "float32", x, OptimizerConfig("adam", lr=3e-3))
    assert all(r.ok for r in rows) and all(r.elementwise_ok is not None for r in rows)
    sgd = step_parity(get_spec("conv"), "float32", x, OptimizerConfig("sgd", lr=0.1, momentum=0.9))
    assert all(r.ok for r in sgd) and all(r.elementwise_ok is None for r in sgd)
