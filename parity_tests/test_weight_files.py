"""Weight files for any model, not only presets: hand-written torch modules and hand-written NNX ports
(parity_tests/thirdparty_models.py), real safetensors files, real frameworks.

A file written from a model without a spec records its dtype, framework and class, and is checked by
names and shapes when loaded; a preset's file still records (and checks) its spec. Renames (``names=``)
map a published state dict's names onto a model's. Every bad file or rename is one error listing every
problem, and the model is left as it was.
"""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.torch
import torch
from flax import nnx

import ae_jax
import ae_torch
from ae_core import CheckpointError, StateDictError, UsageError
from ae_core.weights import load_safetensors, rename
from parity_tests import thirdparty_models as T

from helpers import assert_trees_all_close, to_numpy_dict

N = 4  # batch
JNP = {"float32": jnp.float32, "float64": jnp.float64}
TORCH = {"float32": torch.float32, "float64": torch.float64}
# torch class -> (its hand-written NNX port, the conversion rules the port's own classes need, latent size)
PORTS = {
    "named": (T.NamedConvAE, T.NamedConvAEFlax, None, None),
    "lenet": (T.LeNetAE, T.LeNetAEFlax, T.BN_STATS_RULES, None),
    "vae": (T.ConvVAE, T.ConvVAEFlax, None, 4),
}


def torch_model(name, dtype="float64", seed=0):
    """The torch model with torch's own seeded init; with BatchNorm, one train-mode forward first, so the
    running statistics and counters in the file are not the defaults a fresh model already has."""
    cls, _, _, latent = PORTS[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls().to(TORCH[dtype])
        x = torch.rand(N, *cls.input_shape, dtype=TORCH[dtype])
        with torch.no_grad():
            model.train()(x, *([torch.randn(N, latent, dtype=TORCH[dtype])] if latent else []))
    return model.eval()


def port(name, dtype="float64"):
    return PORTS[name][1](nnx.Rngs(0), JNP[dtype])


def rules(name):
    return PORTS[name][2]


def inputs(name, dtype="float64"):
    cls, _, _, latent = PORTS[name]
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(N, *cls.input_shape)).astype(dtype)
    return x, ([rng.standard_normal((N, latent)).astype(dtype)] if latent else [])


def nchw(a):
    a = np.asarray(a)
    return a.transpose(0, 3, 1, 2) if a.ndim == 4 else a


def outputs(tm, jm, name, dtype="float64"):
    """Both models' outputs on one batch, in eval mode, as lists of numpy arrays in torch's layout."""
    x, extra = inputs(name, dtype)
    with torch.no_grad():
        t_out = tm.eval()(torch.from_numpy(x), *map(torch.from_numpy, extra))
    jm.eval()
    j_out = jm(jnp.asarray(x.transpose(0, 2, 3, 1)), *map(jnp.asarray, extra))
    listed = lambda out: list(out) if isinstance(out, (list, tuple)) else [out]  # noqa: E731
    return [o.numpy() for o in listed(t_out)], [nchw(o) for o in listed(j_out)]


def metadata(path):
    return load_safetensors(path)[1]


def jax_sd(jm, name):
    return ae_jax.state_dict(jm, rules(name))


def exactly_equal(got, want):
    """Bitwise, dtypes included (assert_trees_all_close(exact=True) compares values)."""
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        assert np.array_equal(got[k], want[k]), k


# ------------------------------------------------------------------ hand-written torch -> NNX port ----
@pytest.mark.parametrize("name", sorted(PORTS))
def test_a_hand_written_torch_models_file_loads_into_its_nnx_port_and_they_agree(tmp_path, name):
    path = tmp_path / f"{name}.safetensors"
    tm = torch_model(name)
    ae_torch.save_weights(tm, path)
    meta = metadata(path)
    assert meta == {"format": "ae-parity/weights", "dtype": "float64", "framework": "torch",
                    "model_class": f"parity_tests.thirdparty_models.{PORTS[name][0].__name__}"}
    jm = port(name)
    ae_jax.load_weights(jm, path, rules=rules(name))
    exactly_equal(jax_sd(jm, name), ae_torch.state_dict(tm))  # the transfer, bitwise, in torch's layout
    t_out, j_out = outputs(tm, jm, name)
    assert len(t_out) == len(j_out)
    for t, j in zip(t_out, j_out):
        np.testing.assert_allclose(j, t, rtol=1e-12, atol=1e-12)
    if name == "lenet":  # the counter crossed too, as an integer
        assert int(jax_sd(jm, name)["bn1.num_batches_tracked"]) == 1


def test_a_port_needing_rules_says_so_when_loaded_without_them(tmp_path):
    from ae_jax.convert import ConversionRuleError

    path = tmp_path / "lenet.safetensors"
    ae_torch.save_weights(torch_model("lenet"), path)
    with pytest.raises(ConversionRuleError, match="no conversion rule for BatchNormStats at bn1"):
        ae_jax.load_weights(port("lenet"), path)


@pytest.mark.parametrize("name", ["named", "lenet"])
def test_a_plain_safetensors_torch_file_loads_into_both_frameworks(tmp_path, name):
    """The file a plain PyTorch user writes (no metadata at all), in float32 as they train."""
    path = tmp_path / "plain.safetensors"
    tm = torch_model(name, "float32")
    safetensors.torch.save_file(tm.state_dict(), path)
    assert metadata(path) == {}
    want = ae_torch.state_dict(tm)
    other = torch_model(name, "float32", seed=1)
    ae_torch.load_weights(other, path)
    exactly_equal(ae_torch.state_dict(other), want)
    jm = port(name, "float32")
    ae_jax.load_weights(jm, path, rules=rules(name))
    exactly_equal(jax_sd(jm, name), want)  # float32 weights, int64 counters on both sides


def test_a_plain_file_in_float32_is_cast_into_a_float64_port(tmp_path):
    """No dtype recorded, nothing to refuse: the values are cast on load, as any state dict's."""
    path = tmp_path / "plain.safetensors"
    tm = torch_model("named", "float32")
    safetensors.torch.save_file(tm.state_dict(), path)
    jm = port("named", "float64")
    ae_jax.load_weights(jm, path)
    got = jax_sd(jm, "named")
    for k, v in ae_torch.state_dict(tm).items():
        assert got[k].dtype == np.float64 and np.array_equal(got[k], v.astype(np.float64)), k


# ------------------------------------------------------------------------- NNX port -> torch ----
def random_state(name, seed):
    """A state dict with no two values alike: the ports start with zero kernels, which would hide a swap."""
    rng = np.random.default_rng(seed)
    draw = lambda v: rng.standard_normal(v.shape).astype(v.dtype)  # noqa: E731
    return {k: np.array(v + rng.integers(1, 5)) if v.dtype.kind in "iu" else draw(v)  # counters stay integers
            for k, v in ae_torch.state_dict(torch_model(name)).items()}


@pytest.mark.parametrize("name", sorted(PORTS))
def test_an_nnx_ports_file_loads_into_the_torch_model_and_back(tmp_path, name):
    path = tmp_path / f"{name}.safetensors"
    jm = port(name)
    ae_jax.load_state_dict(jm, random_state(name, 3), rules=rules(name))
    want = jax_sd(jm, name)
    ae_jax.save_weights(jm, path, rules=rules(name))
    meta = metadata(path)
    assert meta["framework"] == "jax" and meta["dtype"] == "float64" and "spec" not in meta
    assert meta["model_class"] == f"parity_tests.thirdparty_models.{PORTS[name][1].__name__}"
    tm = torch_model(name, seed=1)
    ae_torch.load_weights(tm, path)
    exactly_equal(ae_torch.state_dict(tm), want)
    again = port(name)
    ae_jax.load_weights(again, path, rules=rules(name))
    exactly_equal(jax_sd(again, name), want)
    t_out, j_out = outputs(tm, jm, name)
    for t, j in zip(t_out, j_out):
        np.testing.assert_allclose(j, t, rtol=1e-12, atol=1e-12)


def test_saving_a_port_without_its_rules_writes_nothing(tmp_path):
    from ae_jax.convert import ConversionRuleError

    with pytest.raises(ConversionRuleError, match="BatchNormStats"):
        ae_jax.save_weights(port("lenet"), tmp_path / "w.safetensors")
    assert os.listdir(tmp_path) == []


def test_a_failed_write_of_a_hand_written_model_keeps_the_old_file(tmp_path, monkeypatch):
    from ae_core import files

    path = tmp_path / "w.safetensors"
    ae_torch.save_weights(torch_model("named"), path)
    old = path.read_bytes()

    def fail_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", fail_fsync)
    with pytest.raises(OSError, match="No space left"):
        ae_torch.save_weights(torch_model("named", seed=1), path)
    with pytest.raises(OSError, match="No space left"):
        ae_jax.save_weights(port("named"), path)
    assert path.read_bytes() == old and os.listdir(tmp_path) == ["w.safetensors"]


# ------------------------------------------------------------------------------ renames ----
PUBLISHED = {"fc_mu": "fc21", "fc_var": "fc22", "decoder_input": "fc3"}  # the model's prefix -> a file's


def published_file(tmp_path, tm):
    """The VAE's weights under another code base's names (pytorch/examples' fc21 / fc22 / fc3)."""
    path = tmp_path / "published.safetensors"
    sd = {rename(k, PUBLISHED): v for k, v in tm.state_dict().items()}
    assert "fc21.weight" in sd and "fc_mu.weight" not in sd
    safetensors.torch.save_file(sd, path)
    return path


def from_published(key: str) -> str:
    head, dot, rest = key.partition(".")
    return {v: k for k, v in PUBLISHED.items()}.get(head, head) + dot + rest


NAMES = {"dict": {v: k for k, v in PUBLISHED.items()}, "function": from_published}


@pytest.mark.parametrize("form", sorted(NAMES))
def test_a_rename_map_loads_a_file_with_other_names_into_both(tmp_path, form):
    tm = torch_model("vae")
    path = published_file(tmp_path, tm)
    want = ae_torch.state_dict(tm)
    other = torch_model("vae", seed=1)
    with pytest.raises(StateDictError, match="missing key 'fc_mu.weight'"):  # without the map: refused
        ae_torch.load_weights(other, path)
    ae_torch.load_weights(other, path, names=NAMES[form])
    exactly_equal(ae_torch.state_dict(other), want)
    jm = port("vae")
    ae_jax.load_weights(jm, path, names=NAMES[form])
    exactly_equal(jax_sd(jm, "vae"), want)
    sd = safetensors.torch.load_file(path)  # and the state dict functions take the same map
    jm2, tm2 = port("vae"), torch_model("vae", seed=2)
    result = ae_jax.load_state_dict(jm2, sd, names=NAMES[form])
    assert result.missing_keys == [] and result.unexpected_keys == []
    ae_torch.load_state_dict(tm2, sd, names=NAMES[form])
    exactly_equal(jax_sd(jm2, "vae"), want)
    exactly_equal(ae_torch.state_dict(tm2), want)
    partial = ae_jax.load_state_dict(port("vae"), {"fc21.bias": sd["fc21.bias"], "fc21.extra": sd["fc21.bias"]},
                                     strict=False, names=NAMES[form])
    assert partial.unexpected_keys == ["fc_mu.extra"] and "fc_mu.bias" not in partial.missing_keys  # renamed


def test_renames_work_with_rules():
    tm = torch_model("lenet")
    sd = {rename(k, {"bn1": "encoder_bn", "bn2": "decoder_bn"}): v for k, v in ae_torch.state_dict(tm).items()}
    jm = port("lenet")
    ae_jax.load_state_dict(jm, sd, rules=T.BN_STATS_RULES, names={"encoder_bn": "bn1", "decoder_bn": "bn2"})
    exactly_equal(jax_sd(jm, "lenet"), ae_torch.state_dict(tm))


def test_a_prefix_renames_whole_names_only():
    names = {"fc21": "fc_mu", "encoder.0": "enc"}
    assert rename("fc21", names) == "fc_mu"
    assert rename("fc21.weight", names) == "fc_mu.weight"
    assert rename("fc210.weight", names) == "fc210.weight"
    assert rename("encoder.0.0.weight", names) == "enc.0.weight"
    assert rename("encoder.01.weight", names) == "encoder.01.weight"
    assert rename("x.weight", None) == "x.weight"


def _bad_renames():
    good = {rename(k, PUBLISHED): v for k, v in ae_torch.state_dict(torch_model("vae")).items()}
    wrong = dict(good, **{"fc21.weight": np.zeros((3, 64))})
    return {
        "wrong shape, both names": (wrong, NAMES["dict"],
                                    ["fc_mu.weight (renamed from 'fc21.weight'): shape (3, 64) != expected (4, 64)"]),
        "unexpected, both names": (dict(good, **{"fc21.extra": np.zeros(2)}), NAMES["dict"],
                                   ["unexpected key 'fc_mu.extra' (renamed from 'fc21.extra')"]),
        "two onto one": (good, {"fc21": "fc_mu", "fc22": "fc_mu", "fc3": "decoder_input"},
                         ["'fc21.weight' and 'fc22.weight' both rename to 'fc_mu.weight'",
                          "missing key 'fc_var.weight' (shape (4, 64))"]),
        "a typo in the map": (good, {"fc_21": "fc_mu", "fc22": "fc_var", "fc3": "decoder_input"},
                              ["missing key 'fc_mu.weight' (shape (4, 64))", "unexpected key 'fc21.weight'",
                               "rename 'fc_21' -> 'fc_mu' matched no key of the state dict"]),
        "a function that fails": (good, lambda k: {"fc21": "fc_mu"}[k.split(".")[0]],
                                  ["names('encoder.0.0.weight') raised KeyError: 'encoder'"]),
        "a function returning no str": (good, lambda k: None if k.startswith("fc3") else from_published(k),
                                        ["names('fc3.weight') returned None, not a str",
                                         "missing key 'decoder_input.weight' (shape (64, 4))"]),
    }


@pytest.mark.parametrize("framework", ["jax", "torch"])
@pytest.mark.parametrize("case", ["wrong shape, both names", "unexpected, both names", "two onto one",
                                  "a typo in the map", "a function that fails", "a function returning no str"])
def test_a_bad_rename_is_one_error_naming_both_names_and_changes_nothing(case, framework):
    sd, names, lines = _bad_renames()[case]
    model = port("vae") if framework == "jax" else torch_model("vae", seed=1)
    if framework == "jax":  # not the port's zero kernels: values any partial load would change
        ae_jax.load_state_dict(model, random_state("vae", 5))
    get = (lambda: jax_sd(model, "vae")) if framework == "jax" else (lambda: ae_torch.state_dict(model))
    load = ae_jax.load_state_dict if framework == "jax" else ae_torch.load_state_dict
    before = get()
    with pytest.raises(StateDictError) as info:
        load(model, sd, names=names)
    for line in lines:
        assert line in info.value.problems, (line, info.value.problems)
    exactly_equal(get(), before)


@pytest.mark.parametrize("names", [["fc21", "fc_mu"], {"fc21": 3}, {"": "x"}])
def test_a_rename_map_of_the_wrong_kind_is_a_usage_error(names):
    with pytest.raises(UsageError, match="names"):
        ae_torch.load_state_dict(torch_model("named"), {}, names=names)


# --------------------------------------------------------------------------- bad files ----
def _bad_files(tm):
    sd = {k: v.clone() for k, v in tm.state_dict().items()}
    missing = dict(sd); del missing["t_conv2.bias"]
    shape = dict(sd, **{"conv2.weight": torch.zeros(4, 4, 5, 5, dtype=torch.float64)})
    unexpected = dict(sd, **{"conv3.weight": torch.zeros(2, dtype=torch.float64)})
    everything = dict(missing, **{"conv2.weight": torch.zeros(4, 4, 5, 5, dtype=torch.float64),
                                  "conv3.weight": torch.zeros(2, dtype=torch.float64)})
    return {
        "missing key": (missing, ["missing key 't_conv2.bias' (shape (1,))"]),
        "wrong shape": (shape, ["conv2.weight: shape (4, 4, 5, 5) != expected (4, 4, 3, 3)"]),
        "unexpected key": (unexpected, ["unexpected key 'conv3.weight'"]),
        "all at once": (everything, ["missing key 't_conv2.bias' (shape (1,))", "unexpected key 'conv3.weight'",
                                     "conv2.weight: shape (4, 4, 5, 5) != expected (4, 4, 3, 3)"]),
    }


@pytest.mark.parametrize("framework", ["jax", "torch"])
@pytest.mark.parametrize("case", ["missing key", "wrong shape", "unexpected key", "all at once"])
def test_a_file_that_does_not_fit_is_one_error_listing_it_and_changes_nothing(tmp_path, case, framework):
    path = tmp_path / "bad.safetensors"
    sd, lines = _bad_files(torch_model("named"))[case]
    safetensors.torch.save_file(sd, path)
    if framework == "jax":
        model = port("named")
        ae_jax.load_state_dict(model, random_state("named", 5))
        get = lambda: jax_sd(model, "named")  # noqa: E731
    else:
        model = torch_model("named", seed=1)
        get = lambda: ae_torch.state_dict(model)  # noqa: E731
    before = get()
    with pytest.raises(StateDictError) as info:
        (ae_jax if framework == "jax" else ae_torch).load_weights(model, path)
    assert str(info.value).startswith(f"weights file {path} does not fit the model ({len(lines)} problem(s))")
    assert sorted(info.value.problems) == sorted(lines)
    exactly_equal(get(), before)


@pytest.mark.parametrize("framework", ["jax", "torch"])
def test_another_hand_written_models_file_is_refused_by_its_names(tmp_path, framework):
    """No spec on either side: the names and shapes are the architecture check, all of them listed."""
    path = tmp_path / "lenet.safetensors"
    ae_torch.save_weights(torch_model("lenet"), path)
    model = port("named") if framework == "jax" else torch_model("named")
    get = (lambda: jax_sd(model, "named")) if framework == "jax" else (lambda: ae_torch.state_dict(model))
    before = get()
    with pytest.raises(StateDictError) as info:
        (ae_jax if framework == "jax" else ae_torch).load_weights(model, path)
    problems = info.value.problems
    assert "conv1.weight: shape (4, 1, 5, 5) != expected (4, 1, 3, 3)" in problems
    assert "missing key 'conv1.bias' (shape (4,))" in problems and "unexpected key 'bn1.running_mean'" in problems
    exactly_equal(get(), before)


def test_a_hand_written_models_file_in_another_dtype_is_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    ae_torch.save_weights(torch_model("named", "float32"), path)
    jm = port("named", "float64")
    ae_jax.load_state_dict(jm, random_state("named", 5))
    before = jax_sd(jm, "named")
    with pytest.raises(CheckpointError, match="w.safetensors: written in float32, model is float64"):
        ae_jax.load_weights(jm, path)
    exactly_equal(jax_sd(jm, "named"), before)


def test_a_missing_or_corrupt_file_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="nope.safetensors: file not found"):
        ae_torch.load_weights(torch_model("named"), tmp_path / "nope.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="bad.safetensors: not a valid safetensors file"):
        ae_jax.load_weights(port("named"), tmp_path / "bad.safetensors")


# --------------------------------------------------------------------- presets and spec-less ----
def test_a_preset_file_records_what_it_always_did(tmp_path):
    path = tmp_path / "w.safetensors"
    ae_jax.save_weights(ae_jax.build("mlp9", seed=0), path)
    meta = metadata(path)
    assert sorted(meta) == ["dtype", "format", "preset", "spec"]
    assert meta["preset"] == "mlp9" and meta["dtype"] == "float32" and json.loads(meta["spec"])["name"] == "mlp9"


def test_preset_and_hand_written_files_load_into_each_other(tmp_path):
    """The file records a spec and the model has none (or the other way round): names and shapes decide."""
    from tutorial_models import MLP9

    preset_file, tutorial_file = tmp_path / "preset.safetensors", tmp_path / "tutorial.safetensors"
    ae_torch.save_weights(ae_torch.build("mlp9", seed=4), preset_file)
    tutorial = MLP9()
    ae_torch.load_weights(tutorial, preset_file)
    exactly_equal(ae_torch.state_dict(tutorial), ae_torch.state_dict(ae_torch.build("mlp9", seed=4)))
    ae_torch.save_weights(MLP9(), tutorial_file)
    assert "spec" not in metadata(tutorial_file) and metadata(tutorial_file)["dtype"] == "float32"
    jm = ae_jax.build("mlp9", seed=0)
    ae_jax.load_weights(jm, tutorial_file)
    assert_trees_all_close(ae_jax.state_dict(jm), to_numpy_dict(safetensors.torch.load_file(tutorial_file)),
                           exact=True)
    with pytest.raises(StateDictError, match="weights file .*preset.safetensors does not fit"):
        ae_torch.load_weights(torch_model("named", "float32"), preset_file)  # no spec to compare: the names say it


class OwnSpec(T.NamedConvAE):
    spec = {"channels": 4}  # a user's own attribute, not an ae_core ModelSpec


def test_a_spec_attribute_that_is_not_a_model_spec_is_the_models_own_business(tmp_path):
    path = tmp_path / "w.safetensors"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tm = OwnSpec().double()
    ae_torch.save_weights(tm, path)
    assert "spec" not in metadata(path) and metadata(path)["model_class"].endswith("OwnSpec")
    jm = port("named")
    ae_jax.load_weights(jm, path)
    exactly_equal(jax_sd(jm, "named"), ae_torch.state_dict(tm))


def test_keys_that_are_not_names_are_listed_with_or_without_a_rename():
    tm = torch_model("named")
    sd = {**ae_torch.state_dict(tm), 3: np.zeros(1)}
    with pytest.raises(StateDictError) as plain:
        ae_torch.load_state_dict(tm, sd)
    assert plain.value.problems == ["unexpected key 3"]
    with pytest.raises(StateDictError) as renamed:
        ae_torch.load_state_dict(tm, sd, names={"conv1": "conv1"})
    assert renamed.value.problems == ["key 3 is not a str name: it cannot be renamed"]
