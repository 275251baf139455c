"""The user's own code, for ``ae-parity diagnose``: ``FILE.py:NAME`` and ``module:NAME`` references to a
model class, a factory function that returns a model, or a rule table ``{NNX class: (ParamRule, ...)}``.

Every problem is one :class:`UsageError` line naming the flag, the file and the cause: no such file or
module, a syntax error (file and line), a failed import or any exception while the module runs (with the
line of the user's file it came through), no such name, keyword arguments the class or factory does not
take, a constructor or factory that raises (the class and the exception), a result that is not the kind
of model asked for, a malformed rule table.

A file is imported once (again only after it changed), so a ``--torch``, a ``--flax`` and a ``--rules``
from the same file share its classes, and a rules file that does ``from models import MyConv`` gets
the very class ``--flax models.py:Net`` uses: a file is imported under its own name (``models``) unless
that name is taken by another module. Its folder is searched for its own imports (after the installed
packages, so a user's ``optax.py`` cannot shadow ours). :func:`user_frame` tells ``ae_parity.exits``
whether an exception raised later, while the comparison ran, came through such code.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import json
import os
import re
import sys
import traceback
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path

from ae_core import UsageError

from .exits import one_line

_FILES: dict[str, tuple[tuple[int, int], object]] = {}  # resolved path -> ((mtime_ns, size), module)
_USER_CODE: set[str] = set()  # resolved paths of the user files and modules loaded
_OURS = ("ae_core", "ae_jax", "ae_torch", "ae_parity")


@functools.lru_cache(maxsize=4096)
def _resolved(filename: str) -> str:
    try:
        return str(Path(filename).resolve())
    except (OSError, ValueError):
        return str(filename)


def _line_in(exc: BaseException, filename: str | None) -> str:
    """``" (FILE line N)"`` for the deepest frame of ``exc``'s traceback in ``filename``; "" if none."""
    if not filename:
        return ""
    target = _resolved(filename)
    lines = [n for frame, n in traceback.walk_tb(exc.__traceback__) if _resolved(frame.f_code.co_filename) == target]
    return f" ({Path(filename).name} line {lines[-1]})" if lines else ""


def _import_failed(what: str, label: str, exc: BaseException, filename: str | None) -> UsageError:
    if isinstance(exc, SyntaxError):
        text = (exc.text or "").strip()
        return UsageError(f"{what}: syntax error in {exc.filename} line {exc.lineno}: {exc.msg}"
                          + (f": {text}" if text else ""))
    if isinstance(exc, SystemExit):
        return UsageError(f"{what}: importing {label} called sys.exit({exc.code!r}){_line_in(exc, filename)}")
    return UsageError(f"{what}: importing {label} failed{_line_in(exc, filename)}: {one_line(exc)}")


def _module_name(path: Path, key: str) -> str:
    """The file's own name (``models``) when that imports this very file, else a private unique one."""
    stem = path.stem
    if stem.isidentifier():
        try:
            spec = importlib.util.find_spec(stem)
        except (ImportError, ValueError):
            spec = None
        if stem not in sys.modules and spec is not None and spec.origin and _resolved(spec.origin) == key:
            return stem
    return f"_ae_parity_user_{re.sub(r'[^0-9A-Za-z_]', '_', stem)}_{zlib.crc32(key.encode()):08x}"


def _load_file(text: str, what: str):
    path = Path(text)
    if not path.is_file():
        raise UsageError(f"{what}: no file {text}")
    key = _resolved(text)
    stat = path.stat()
    version = (stat.st_mtime_ns, stat.st_size)
    if key in _FILES and _FILES[key][0] == version:
        return _FILES[key][1]
    same = sys.modules.get(path.stem)  # already imported by name (from another user file)
    if same is not None and _resolved(getattr(same, "__file__", None) or "") == key and key not in _FILES:
        _FILES[key] = (version, same)
        return same
    folder = str(Path(key).parent)
    if folder not in sys.path:
        sys.path.append(folder)
    name = _module_name(path, key)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before it runs: dataclasses and pickle look their module up
    _USER_CODE.add(key)
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:
        sys.modules.pop(name, None)
        raise _import_failed(what, text, e, key) from e
    _FILES[key] = (version, module)
    return module


def _load_module(name: str, what: str):
    if os.getcwd() not in sys.path:  # as `python -m` does: modules in the current folder import
        sys.path.append(os.getcwd())
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:
        spec = None
    except (Exception, SystemExit) as e:  # a parent package failed to import
        raise _import_failed(what, name, e, None) from e
    if spec is None:
        raise UsageError(f"{what}: no module named {name} (for a file: FILE.py:NAME)")
    if spec.origin and name.split(".")[0] not in _OURS and "-packages" not in spec.origin:
        _USER_CODE.add(_resolved(spec.origin))
    try:
        return importlib.import_module(name)
    except (Exception, SystemExit) as e:
        raise _import_failed(what, name, e, spec.origin) from e


def load(ref: str, flag: str):
    """The object a ``FILE.py:NAME`` or ``module:NAME`` reference names."""
    where, sep, name = ref.rpartition(":")
    what = f"{flag} {ref}"
    if not sep or not where or not name.isidentifier():
        raise UsageError(f"{what}: expected FILE.py:NAME or module:NAME")
    if where.endswith(".py"):
        module = _load_file(where, what)
    elif all(part.isidentifier() for part in where.split(".")):
        module = _load_module(where, what)
    else:
        raise UsageError(f"{what}: {where!r} is neither a .py file nor a module name")
    if not hasattr(module, name):
        own = sorted(k for k, v in vars(module).items() if not k.startswith("_") and callable(v)
                     and getattr(v, "__module__", None) == module.__name__)
        hint = f" (it defines {', '.join(own[:8])}{', ...' if len(own) > 8 else ''})" if own else ""
        raise UsageError(f"{what}: {where} defines no {name}{hint}")
    return getattr(module, name)


def _signature(obj, is_class: bool) -> inspect.Signature | None:
    try:
        sig = inspect.signature(obj.__init__ if is_class else obj)
    except (TypeError, ValueError):  # no signature to check (a builtin): the call will tell
        return None
    return sig.replace(parameters=list(sig.parameters.values())[1:]) if is_class else sig


def _check_arguments(sig, label: str, kwargs: dict, given: dict | None, what: str, kwargs_flag: str) -> None:
    if sig is None:
        return
    try:
        sig.bind(**kwargs)
    except TypeError as e:
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        takes = ", ".join(n for n, p in sig.parameters.items() if p.kind in kinds) or "no keyword arguments"
        if given:
            raise UsageError(f"{kwargs_flag} {json.dumps(given)}: {label}() {e} (it takes {takes})") from None
        raise UsageError(f"{what}: {label}() {e}; give it with {kwargs_flag} '{{\"NAME\": VALUE}}' "
                         f"(it takes {takes})") from None


def build(ref: str, flag: str, kind: type, kind_name: str, kwargs: Mapping | None = None, *,
          kwargs_flag: str = "", defaults: Mapping[str, tuple[str, Callable]] | None = None):
    """The model ``ref`` names, built: an instance of the class, or what the factory function returns,
    called with ``kwargs`` (and each of ``defaults``, ``{name: (shown as, make)}``, that it takes by name
    and was not given). It must be a ``kind`` (e.g. ``torch.nn.Module``); ``kind_name`` names it."""
    obj = load(ref, flag)
    what, label = f"{flag} {ref}", getattr(obj, "__qualname__", None) or ref.rpartition(":")[2]
    is_class = inspect.isclass(obj)
    if is_class and not issubclass(obj, kind):
        raise UsageError(f"{what}: {label} is a class but not a {kind_name}")
    if not is_class and not callable(obj):
        raise UsageError(f"{what}: {label} is neither a {kind_name} class nor a function that returns one "
                         f"(it is a {type(obj).__name__} object)")
    sig = _signature(obj, is_class)
    given = dict(kwargs or {})
    call, shown = dict(given), [f"{k}={json.dumps(v)}" for k, v in given.items()]
    for key, (text, make) in (defaults or {}).items():
        if key not in call and sig is not None and key in sig.parameters:
            call[key] = make()
            shown.append(f"{key}={text}")
    _check_arguments(sig, label, call, given, what, kwargs_flag)
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    try:
        model = obj(**call)
    except Exception as e:
        raise UsageError(f"{what}: {label}({', '.join(shown)}) raised {one_line(e)}"
                         f"{_line_in(e, getattr(module, '__file__', None))}") from e
    if not isinstance(model, kind):
        made = type(model)
        where = "" if made.__module__ in ("builtins", getattr(module, "__name__", None)) else f"{made.__module__}."
        raise UsageError(f"{what}: {label}() returned a {where}{made.__qualname__}, not a {kind_name}")
    return model


def load_rules(ref: str, flag: str = "--rules") -> dict[type, tuple]:
    """The rule table ``ref`` names, checked: a mapping of ``nnx.Module`` classes to tuples of
    ``ae_jax.convert.ParamRule``."""
    from flax import nnx

    from ae_jax.convert import ParamRule

    table, what = load(ref, flag), f"{flag} {ref}"
    if not isinstance(table, Mapping):
        raise UsageError(f"{what}: expected a mapping {{NNX class: (ParamRule, ...)}}, got a {type(table).__name__}")
    out = {}
    for cls, rules in table.items():
        if not (inspect.isclass(cls) and issubclass(cls, nnx.Module)):
            raise UsageError(f"{what}: the key {cls!r} is not an nnx.Module class")
        if isinstance(rules, ParamRule):
            raise UsageError(f"{what}: {cls.__name__}: a ParamRule, not a tuple of them (the comma: (ParamRule(...),))")
        if not isinstance(rules, (tuple, list)) or not all(isinstance(r, ParamRule) for r in rules):
            shown = repr(rules)
            raise UsageError(f"{what}: {cls.__name__}: expected a tuple of ae_jax.convert.ParamRule, got "
                             f"{shown[:80] + '...' if len(shown) > 80 else shown}")
        out[cls] = tuple(rules)
    return out


def user_frame(exc: BaseException) -> str | None:
    """``"FILE line N (in FUNC)"``: the deepest frame of ``exc``'s traceback in a user file loaded here, if any."""
    found = None
    for frame, lineno in traceback.walk_tb(exc.__traceback__):
        if _USER_CODE and _resolved(frame.f_code.co_filename) in _USER_CODE:
            found = f"{Path(frame.f_code.co_filename).name} line {lineno}, in {frame.f_code.co_name}"
    return found


__all__ = ["build", "load", "load_rules", "user_frame"]
