"""Small shared test helpers (optax-style)."""

from __future__ import annotations

from typing import Mapping

import numpy as np


def assert_trees_all_close(actual: Mapping, expected: Mapping, *, atol: float = 0.0, rtol: float = 0.0,
                           exact: bool = False) -> None:
    """Same keys, same shapes, values close (or bit-equal with ``exact``) leaf by leaf."""
    assert sorted(actual) == sorted(expected), f"keys differ: {sorted(set(actual) ^ set(expected))}"
    for k in expected:
        a, e = np.asarray(actual[k]), np.asarray(expected[k])
        assert a.shape == e.shape, f"{k}: shape {a.shape} != {e.shape}"
        if exact:
            assert a.dtype == e.dtype, f"{k}: dtype {a.dtype} != {e.dtype}"
            np.testing.assert_array_equal(a, e, err_msg=k)
        else:
            np.testing.assert_allclose(a, e, atol=atol, rtol=rtol, err_msg=k)


def to_numpy_dict(sd: Mapping) -> dict[str, np.ndarray]:
    return {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v)).copy() for k, v in sd.items()}


def assert_port_agrees(report, dtype: str) -> None:
    """A port's ``compare`` report: it passes, covers the forward, the gradients and an optimizer step, and
    meets the bar of its dtype -- float64 forward within 1e-12, float32 judged against the float64
    reference on every forward, gradient and step row."""
    assert report.ok, report.table()
    assert {"forward", "grad", "step"} <= {e.stage for e in report.entries}
    if dtype == "float64":
        assert max(e.max_abs for e in report.entries if e.stage == "forward") <= 1e-12, report.table()
    else:
        assert all(e.kind == "ref" for e in report.entries if e.stage in ("forward", "grad", "step"))


def hide_modules(folder, names, env: dict) -> dict:
    """``env`` for a subprocess in which the modules ``names`` cannot be imported, as if not installed: a
    package of each name in ``folder``, first on ``PYTHONPATH``, whose import raises ModuleNotFoundError."""
    import os
    from pathlib import Path

    folder = Path(folder)
    for name in names:
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{name}'\", name={name!r})\n")
    return dict(env, PYTHONPATH=os.pathsep.join(p for p in (str(folder), env.get("PYTHONPATH")) if p))
