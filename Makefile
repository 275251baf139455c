# Everything a fresh machine needs: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

# The install pins every package to constraints.txt: the exact versions the suite last passed with.
# To install unpinned (the newest versions pyproject.toml allows, e.g. to try new releases), set
# CONSTRAINTS empty:
#     make test CONSTRAINTS=
# That (re)installs the venv with every package upgraded, and exports AE_PARITY_UNPINNED=1 so the
# installed-versions check in parity_tests/test_packaging.py skips. A later plain `make test` puts the
# pinned versions back. If the unpinned suite passes, `make constraints` records its versions.
CONSTRAINTS ?= constraints.txt
ifeq ($(strip $(CONSTRAINTS)),)
STAMP    := $(VENV)/.installed-unpinned
PIP_PINS := --upgrade --upgrade-strategy eager
BUILD_PINS :=
export AE_PARITY_UNPINNED := 1
else
STAMP    := $(VENV)/.installed
PIP_PINS := --constraint $(CONSTRAINTS)
# the isolated build of ae-parity itself takes the pinned setuptools too (pip >= 25.3, installed first)
BUILD_PINS := --build-constraint $(CONSTRAINTS)
endif

.PHONY: demo test bench venv constraints clean

venv: $(STAMP)

# Rebuilt when pyproject.toml or the constraints file changes. PYTHONWARNINGS silences one message only:
# setuptools' informational "Editable installation" banner, printed for every editable install of this
# flat several-package layout; its deprecation warnings still show (and test_packaging fails on them).
$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	rm -f $(VENV)/.installed $(VENV)/.installed-unpinned
	$(PY) -m pip install --quiet --upgrade $(PIP_PINS) pip
	PYTHONWARNINGS='ignore:Editable installation' $(PY) -m pip install --quiet $(PIP_PINS) $(BUILD_PINS) -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ae-parity demo

# one pytest worker per core (pytest-xdist): the suite is compile-bound, and the tests share nothing but
# read-only data (each worker writes the MNIST sample into its own session folder)
test: $(STAMP)
	$(PY) -m pytest -q -n auto

bench: $(STAMP)
	$(VENV)/bin/ae-parity bench

# rewrite constraints.txt from the installed venv (every package but ae-parity itself, == pins, sorted)
constraints:
	{ echo '# The exact versions the ae-parity test suite passes with, every installed package but ae-parity'; \
	  echo '# itself. `make venv` / `make test` / `make demo` install with `pip install --constraint constraints.txt`'; \
	  echo '# (see the Makefile for installing unpinned). Written by `make constraints`, i.e.'; \
	  echo '#     $(PY) -m pip freeze --all --exclude-editable | LC_ALL=C sort -f'; \
	  echo '# from a venv the suite passed in; rerun it there to record new versions.'; \
	  $(PY) -c 'import platform; print("# Recorded with Python", platform.python_version(), "on", platform.system(), platform.machine())'; \
	  $(PY) -m pip freeze --all --exclude-editable | LC_ALL=C sort -f; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

clean:
	rm -rf $(VENV) data runs
