"""Packaging: the wheel builds with no warning at all, and the install matches constraints.txt."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ae_core", "ae_jax", "ae_torch", "ae_parity")


def canonical(name: str) -> str:
    """PEP 503 normalised project name: ``Jinja2`` and ``jinja2``, ``ml_dtypes`` and ``ml-dtypes`` are one."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_constraints() -> dict[str, str]:
    """constraints.txt as {normalised name: version}; every line that is not a comment is a ``name==version``."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        assert sep and name.strip() and version.strip(), f"constraints.txt: not a name==version pin: {line!r}"
        pins[canonical(name.strip())] = version.strip()
    return pins


def project_requirements() -> list[Requirement]:
    """pyproject's dependencies and optional dependencies, less the project's own extras (``ae-parity[all]``)."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"]) + [r for extra in project["optional-dependencies"].values() for r in extra]
    reqs = [Requirement(line) for line in lines]
    return [r for r in reqs if canonical(r.name) != canonical(project["name"])]


def build_wheel(src: Path, out: Path) -> subprocess.CompletedProcess:
    """setuptools' PEP 517 hook, as pip calls it, with every warning an error; offline (no build isolation:
    the venv's setuptools, which pyproject's build-system floor must admit)."""
    out.mkdir()
    code = "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"
    return subprocess.run([sys.executable, "-W", "error", "-c", code, str(out)], cwd=src, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def source_copy(tmp_path):
    """The tracked files the wheel is built from, copied: the build writes build/ and *.egg-info, never into
    the checkout."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return src


def test_wheel_builds_with_warnings_as_errors_and_an_spdx_license(source_copy, tmp_path):
    """A deprecated pyproject form (the license as a TOML table: unsupported by setuptools from 2027-02-18)
    must fail here, not years later on a user's fresh install."""
    out = build_wheel(source_copy, tmp_path / "dist")
    assert out.returncode == 0, out.stderr
    assert "deprecat" not in out.stderr.lower(), out.stderr
    wheel = tmp_path / "dist" / out.stdout.strip().splitlines()[-1]
    assert wheel.is_file(), out.stdout
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata.splitlines(), metadata
    for pkg in PACKAGES:
        assert f"{pkg}/__init__.py" in names, f"{pkg} is not in the wheel"


def test_pyproject_ranges_are_all_pinned_and_admit_their_pins():
    """Every dependency pyproject declares has a pin in constraints.txt (a new one cannot go in unpinned),
    and the pin lies inside pyproject's own range (the two files cannot drift apart)."""
    pins = read_constraints()
    unpinned = sorted({r.name for r in project_requirements() if canonical(r.name) not in pins})
    assert not unpinned, f"in pyproject.toml but not pinned in constraints.txt: {unpinned}"
    outside = [f"{r.name}=={pins[canonical(r.name)]} is outside pyproject's {r}"
               for r in project_requirements() if not r.specifier.contains(pins[canonical(r.name)], prereleases=True)]
    assert not outside, "\n".join(outside)


def test_installed_versions_are_the_pinned_ones():
    """The venv holds the versions the suite last passed with. A pinned package that is not installed is fine
    (a platform's own, e.g. nvidia-* on Linux only) unless pyproject requires it directly."""
    if os.environ.get("AE_PARITY_UNPINNED"):
        pytest.skip("AE_PARITY_UNPINNED is set: installed unpinned (`make test CONSTRAINTS=`), not from constraints.txt")
    direct = {canonical(r.name) for r in project_requirements()}
    wrong = []
    for name, wanted in sorted(read_constraints().items()):
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            if name in direct:
                wrong.append(f"{name}: wanted {wanted}, not installed")
            continue
        if Version(installed) != Version(wanted):
            wrong.append(f"{name}: wanted {wanted}, installed {installed}")
    assert not wrong, ("installed versions differ from constraints.txt (reinstall with `make venv`, or record "
                       "these with `make constraints` once the suite passes):\n" + "\n".join(wrong))
