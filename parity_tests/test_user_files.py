"""``ae-parity diagnose`` on the user's own files: factories, constructor arguments, --rules (found by
subclass too), and every problem in the user's file as one line with the right exit code; the exit-code
scheme itself (0 ok, 1 reported, 2 usage, 3 internal, 130 interrupted). All in-process, on tiny models."""

from __future__ import annotations

import json

import pytest
from flax import nnx

from ae_jax.convert import RULES, ConversionRuleError, ParamRule, bindings, rules_for
from ae_parity.cli import main

MODELS = '''
import jax.numpy as jnp
import torch
from flax import nnx
from torch import nn

CONSTANT = 3


class TorchNet(nn.Module):
    def __init__(self, width=8):
        super().__init__()
        self.fc = nn.Linear(4, width)
        self.out = nn.Linear(width, 4)

    def forward(self, x):
        return self.out(torch.tanh(self.fc(x)))


class FlaxNet(nnx.Module):
    def __init__(self, width=8, *, rngs):
        f64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)  # a float64 comparison
        self.fc = nnx.Linear(4, width, rngs=rngs, **f64)
        self.out = nnx.Linear(width, 4, rngs=rngs, **f64)

    def __call__(self, x):
        return self.out(jnp.tanh(self.fc(x)))


def make_torch(width=8):
    return TorchNet(width)


def make_flax(width=8, *, rngs):
    return FlaxNet(width, rngs=rngs)


def make_list():
    return [1, 2]


class Boom(nn.Module):
    def __init__(self):
        super().__init__()
        raise RuntimeError("no GPU here")


class NeedsWidth(nn.Module):
    def __init__(self, width):
        super().__init__()
'''


def line_of(text: str, code: str) -> int:
    return text.splitlines().index(code) + 1


BOOM = '        raise RuntimeError("no GPU here")'


@pytest.fixture
def models(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(MODELS)
    return str(path)


def diagnose(capsys, *argv):
    """``ae-parity diagnose`` in this process: (exit code, stdout, stderr); argparse's exit too."""
    try:
        code = main(["diagnose", "--input-shape", "4", "--batch-size", "4", *argv])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_factories_and_constructor_arguments(models, capsys):
    code, out, err = diagnose(capsys, "--torch", f"{models}:make_torch", "--flax", f"{models}:FlaxNet",
                              "--torch-kwargs", '{"width": 6}', "--flax-kwargs", '{"width": 6}', "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] and ("fc.weight", (6, 4)) in {(e["name"], tuple(e["shape"])) for e in report["entries"]}
    code, _, err = diagnose(capsys, "--torch", f"{models}:TorchNet", "--flax", f"{models}:make_flax")
    assert code == 0, err  # the factory takes rngs: it gets nnx.Rngs(0)
    code, _, err = diagnose(capsys, "--torch", f"{models}:TorchNet", "--flax", f"{models}:FlaxNet",
                            "--flax-kwargs", '{"width": 5}')
    assert code == 1 and "torch shape (8, 4) != flax (5, 4)" in err  # ran, and the port does not mirror


BAD_FILES = {  # file text -> what the one line says (besides the file's name)
    "def f(:\n    pass\n": "syntax error in {path} line 1: invalid syntax: def f(:",
    "import os\nimport no_such_module_here\n": "importing {path} failed (user.py line 2): ModuleNotFoundError: "
                                              "No module named 'no_such_module_here'",
    "x = 1\ny = x / 0\n": "importing {path} failed (user.py line 2): ZeroDivisionError: division by zero",
    "import sys\nsys.exit(3)\n": "importing {path} called sys.exit(3) (user.py line 2)",
}


@pytest.mark.parametrize("text", list(BAD_FILES), ids=["syntax", "import", "raises", "exits"])
def test_a_broken_user_file_is_one_line_naming_it(text, models, tmp_path, capsys):
    path = tmp_path / "user.py"
    path.write_text(text)
    code, out, err = diagnose(capsys, "--torch", f"{path}:TorchNet", "--flax", f"{models}:FlaxNet")
    assert code == 2 and out == ""
    assert err == f"ae-parity diagnose: error: --torch {path}:TorchNet: {BAD_FILES[text].format(path=path)}\n"


@pytest.mark.parametrize("argv, message", [
    (["--torch", "{m}:Nope"], "--torch {m}:Nope: {m} defines no Nope (it defines Boom, FlaxNet, NeedsWidth, TorchNet, "
                              "make_flax, make_list, make_torch)"),
    (["--torch", "{m}:Boom"], "--torch {m}:Boom: Boom() raised RuntimeError: no GPU here (models.py line "
                              f"{line_of(MODELS, BOOM)})"),
    (["--torch", "{m}:TorchNet", "--torch-kwargs", '{"widht": 3}'],
     "--torch-kwargs {\"widht\": 3}: TorchNet() got an unexpected keyword argument 'widht' (it takes width)"),
    (["--torch", "{m}:NeedsWidth"], "--torch {m}:NeedsWidth: NeedsWidth() missing a required argument: 'width'; "
                                    "give it with --torch-kwargs"),
    (["--torch", "{m}:make_list"], "make_list() returned a list, not a torch nn.Module"),
    (["--torch", "{m}:FlaxNet"], "--torch {m}:FlaxNet: FlaxNet is a class but not a torch nn.Module"),
    (["--torch", "{m}:CONSTANT"], "CONSTANT is neither a torch nn.Module class nor a function that returns one "
                                  "(it is a int object)"),
    (["--torch", "{m}:make_torch", "--flax", "{m}:make_torch"], "--flax {m}:make_torch: make_torch() returned a "
                                                                "TorchNet, not a flax nnx.Module"),
    (["--torch", "no_such_module_here:Net"], "--torch no_such_module_here:Net: no module named no_such_module_here"),
    (["--torch", "{m}"], "expected FILE.py:NAME or module:NAME"),
    (["--torch", "{m}.txt:Net"], "is neither a .py file nor a module name"),
    (["--torch", "nowhere.py:Net"], "--torch nowhere.py:Net: no file nowhere.py"),
    (["--torch", "{m}:TorchNet", "--torch-kwargs", "{width: 3}"], "argument --torch-kwargs: not valid JSON"),
    (["--torch", "{m}:TorchNet", "--flax-kwargs", "[3]"], "argument --flax-kwargs: expected a JSON object of "
                                                          "keyword arguments like '{\"width\": 64}', got a list"),
])
def test_user_file_problems_exit_2_with_one_line(argv, message, models, capsys):
    argv = [a.replace("{m}", models) for a in argv]
    if "--flax" not in argv:
        argv += ["--flax", f"{models}:FlaxNet"]
    code, out, err = diagnose(capsys, *argv)
    *usage, line = err.strip().splitlines()  # argparse's own errors come after the usage lines
    assert code == 2 and out == "" and message.replace("{m}", models) in line, err
    assert "Traceback" not in err and (not usage or usage[0].startswith("usage: ae-parity diagnose"))


RULES_FILE = '''
from ae_jax.convert import ParamRule
from {stem} import Scale

RULES = {{Scale: (ParamRule("gain", "weight"),)}}
NOT_A_MAPPING = [Scale]
BAD_KEY = {{"Scale": (ParamRule("gain", "weight"),)}}
NO_COMMA = {{Scale: (ParamRule("gain", "weight"))}}
NOT_RULES = {{Scale: ("gain", "weight")}}
'''

PORT = '''
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from torch import nn


class TorchScale(nn.Module):  # a layer of the user's own
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(0.5, 2.0, 4))

    def forward(self, x):
        return x * self.weight


class TorchNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc, self.scale = nn.Linear(4, 4), TorchScale()

    def forward(self, x):
        return self.scale(self.fc(x))


class Scale(nnx.Module):
    def __init__(self):
        self.gain = nnx.Param(np.ones(4))

    def __call__(self, x):
        return x * self.gain[...]


class LoudScale(Scale):  # a subclass: the rule given for Scale applies
    pass


class MyLinear(nnx.Linear):  # a subclass of a Flax layer: nnx.Linear's rule applies
    pass


class FlaxNet(nnx.Module):
    def __init__(self, *, rngs):
        self.fc = MyLinear(4, 4, rngs=rngs, dtype=jnp.float64, param_dtype=jnp.float64)
        self.scale = LoudScale()

    def __call__(self, x):
        return self.scale(self.fc(x))
'''


def test_rules_from_a_file_apply_to_subclasses_for_this_comparison_only(tmp_path, capsys):
    stem = "ae_parity_test_port_models"  # imported by name from the rules file: one class, not two
    (tmp_path / f"{stem}.py").write_text(PORT)
    rules = tmp_path / "my_rules.py"
    rules.write_text(RULES_FILE.format(stem=stem))
    port = str(tmp_path / f"{stem}.py")
    common = ["--torch", f"{port}:TorchNet", "--flax", f"{port}:FlaxNet"]
    code, out, err = diagnose(capsys, *common, "--rules", f"{rules}:RULES", "--json")
    assert code == 0, err
    names = {e["name"] for e in json.loads(out)["entries"] if e["stage"] == "grad"}
    assert names == {"fc.weight", "fc.bias", "scale.weight"}
    assert not any(cls.__name__ in ("Scale", "LoudScale") for cls in RULES)  # never written into the table

    code, _, err = diagnose(capsys, *common)  # no rule for the user's layer: say which, and how to give it
    assert code == 2 and "no conversion rule for LoudScale at scale" in err and "--rules FILE.py:NAME" in err
    for name, message in [("NOT_A_MAPPING", "expected a mapping {NNX class: (ParamRule, ...)}, got a list"),
                          ("BAD_KEY", "the key 'Scale' is not an nnx.Module class"),
                          ("NO_COMMA", "Scale: a ParamRule, not a tuple of them (the comma: (ParamRule(...),))"),
                          ("NOT_RULES", "Scale: expected a tuple of ae_jax.convert.ParamRule, got ('gain', 'weight')"),
                          ("MISSING", f"{rules} defines no MISSING")]:
        code, _, err = diagnose(capsys, *common, "--rules", f"{rules}:{name}")
        assert code == 2 and err == f"ae-parity diagnose: error: --rules {rules}:{name}: {message}\n", err


def test_rule_lookup_walks_the_mro(monkeypatch):
    class MyConv(nnx.Conv):
        pass

    class Base(nnx.Module):
        pass

    class Child(Base):
        pass

    mine, theirs, exact = (ParamRule("a", "x"),), (ParamRule("b", "y"),), (ParamRule("c", "z"),)
    assert rules_for(MyConv) == (RULES[nnx.Conv], nnx.Conv)
    assert rules_for(MyConv, {MyConv: mine}) == (mine, MyConv)  # an exact entry wins over an inherited one
    assert rules_for(Child, {Base: mine}) == (mine, Base)  # yours apply to subclasses of your classes
    assert rules_for(Child) is None
    monkeypatch.setitem(RULES, Child, exact)
    assert rules_for(Child, {Base: mine}) == (exact, Child)  # the table's own entry beats an inherited one
    assert rules_for(Child, {Child: theirs}) == (theirs, Child)  # for one class, yours win

    class Tagged(nnx.Linear):  # a subclass with a variable of its own: the inherited rule does not cover it
        def __init__(self, *a, rngs):
            super().__init__(*a, rngs=rngs)
            self.tag = nnx.Param(nnx.initializers.zeros(rngs.params(), (2,)))

    assert [b.name for b in bindings(nnx.Sequential(MyConv(1, 2, (3, 3), rngs=nnx.Rngs(0))))] == ["0.weight", "0.bias"]
    with pytest.raises(ConversionRuleError, match=r"Tagged at <root> inherits the conversion rule of Linear, "
                                                  r"which does not map its variables \['tag'\]"):
        bindings(Tagged(2, 2, rngs=nnx.Rngs(0)))
    assert issubclass(ConversionRuleError, TypeError)  # what bindings raised before


def test_user_code_raising_while_comparing_is_reported_not_a_bug(models, capsys):
    code, _, err = diagnose(capsys, "--torch", f"{models}:TorchNet", "--flax", f"{models}:FlaxNet",
                            "--input-shape", "5")  # the models take 4 features
    assert code == 1 and "Traceback" not in err
    assert err.startswith("ae-parity diagnose: error: your code raised RuntimeError: ")
    forward = line_of(MODELS, "        return self.out(torch.tanh(self.fc(x)))")
    assert f"(at models.py line {forward}, in forward)" in err


# ------------------------------------------------------------------------------------- exit codes ----
def _raise(exc):
    def run(args):
        raise exc

    return run


@pytest.mark.parametrize("exc, code, line", [
    (ValueError("operands could not be broadcast together"), 3,
     "ae-parity parity: internal error: ValueError: operands could not be broadcast together -- a bug in ae-parity, "
     "please report it"),
    (KeyError("step"), 3, "ae-parity parity: internal error: KeyError: 'step'"),
    (__import__("ae_core").UsageError("--lr 3 with --optimizer x"), 2, "ae-parity parity: error: --lr 3 with"),
    (KeyboardInterrupt(), 130, "ae-parity parity: interrupted"),
])
def test_exit_codes(exc, code, line, monkeypatch, capsys):
    from ae_parity import cli

    monkeypatch.setitem(cli.HANDLERS, "parity", _raise(exc))
    monkeypatch.delenv("AE_PARITY_DEBUG", raising=False)
    assert cli.main(["parity"]) == code
    err = capsys.readouterr().err
    assert err.startswith(line) and len(err.splitlines()) == 1, err
    if code == 3:
        assert "--debug or AE_PARITY_DEBUG=1 prints the traceback" in err


def test_debug_prints_the_traceback(monkeypatch, capsys):
    from ae_parity import cli

    monkeypatch.setitem(cli.HANDLERS, "parity", _raise(ValueError("deep in numpy")))
    monkeypatch.delenv("AE_PARITY_DEBUG", raising=False)
    for argv, env in ((["--debug", "parity"], None), (["parity", "--debug"], None), (["parity"], "1")):
        if env:
            monkeypatch.setenv("AE_PARITY_DEBUG", env)
        assert cli.main(argv) == 3
        err = capsys.readouterr().err
        assert "internal error: ValueError: deep in numpy" in err and "Traceback (most recent call last)" in err


def test_usage_errors_are_value_errors_and_arguments_raise_them():
    from ae_core import UsageError
    from ae_core.optim import OptimizerConfig

    assert issubclass(UsageError, ValueError)
    with pytest.raises(UsageError, match="nesterov needs the sgd optimizer"):
        OptimizerConfig("adam", nesterov=True)
