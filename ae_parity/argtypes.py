"""The command line's argument types: each turns one flag's text into its value, or raises
``argparse.ArgumentTypeError`` with a message naming what was expected (argparse prints it and exits 2).
``ae_parity.cli`` lays out the commands with them."""

from __future__ import annotations

import argparse
import json

MAX_SEED = 2 ** 32 - 1  # numpy's, torch's and JAX's generators all take it


def checked(kind, ok, expected: str):
    """A converter: ``kind(text)``, which must satisfy ``ok``; otherwise "expected <expected>, got ..."."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):  # written so that NaN fails it too
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


def positive(kind):
    return checked(kind, lambda v: v > 0, f"a positive {kind.__name__}")


def int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive ints, got {text!r}")
    return values


seed = checked(int, lambda v: 0 <= v <= MAX_SEED, f"a seed, an integer 0..{MAX_SEED}")
non_negative_float = checked(float, lambda v: v >= 0, "a number >= 0")


def devices(text: str):
    if text == "all":
        return text
    try:
        return positive(int)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 'all' or a positive device count, got {text!r}") from None


def float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive numbers, got {text!r}") from None
    if not values or not min(values) > 0:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive numbers, got {text!r}")
    return values


def seed_list(text: str) -> list[int]:
    from ae_jax.sweep import parse_seeds

    try:
        return parse_seeds(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def spec_file(text: str):
    """``--spec FILE``: a :class:`~ae_core.spec.ModelSpec` from a JSON file (``spec.to_json()``, README "Your own
    architecture") or from the metadata of a checkpoint / weights file (``.safetensors``) that records one."""
    from pathlib import Path

    from ae_core.spec import ModelSpec, SpecError
    from ae_core.weights import CheckpointError, read_metadata

    path = Path(text)
    if path.suffix == ".safetensors":
        try:
            meta = read_metadata(path)
        except CheckpointError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
        if "spec" not in meta:
            hint = (" (a model graph's run: continue it with --resume, or give its graph JSON with --graph)"
                    if "graph" in meta else "")
            raise argparse.ArgumentTypeError(f"{path}: records no model spec{hint}")
        text = meta["spec"]
    else:
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise argparse.ArgumentTypeError(f"{path}: file not found") from None
        except (OSError, UnicodeDecodeError) as e:
            raise argparse.ArgumentTypeError(f"{path}: cannot read ({e})") from None
    try:
        spec = ModelSpec.from_json(text)
    except (SpecError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"{path}: {e}") from None
    if not isinstance(spec.name, str) or not spec.name.strip():
        raise argparse.ArgumentTypeError(f"{path}: the spec's name must be a non-empty string, got {spec.name!r}")
    return spec


def margin(text: str):
    from .equivalence import parse_margin

    try:
        return parse_margin(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 0.5:
        raise argparse.ArgumentTypeError(f"expected a level between 0 and 0.5, got {text!r}")
    return value


def json_object(text: str) -> dict:
    """A JSON object (keyword arguments) on the command line."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object of keyword arguments like "
                                         f"'{{\"width\": 64}}', got a {type(value).__name__}: {text!r}")
    return value


def noise(text: str) -> tuple[str, tuple[int, ...]]:
    """``NAME=SHAPE`` (per example, e.g. ``eps=16`` or ``eps=4x7x7``): a forward argument of standard normal numbers."""
    name, sep, shape = text.partition("=")
    try:
        dims = tuple(int(d) for d in shape.split("x")) if sep and name.isidentifier() else ()
    except ValueError:
        dims = ()
    if not dims or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected NAME=SHAPE per example, e.g. eps=16 or eps=4x7x7, got {text!r}")
    return name, dims


