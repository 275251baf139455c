# Everything a fresh machine needs: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ae-parity demo

# one pytest worker per core (pytest-xdist): the suite is compile-bound, and the tests share nothing but
# read-only data (each worker writes the MNIST sample into its own session folder)
test: $(STAMP)
	$(PY) -m pytest -q -n auto

bench: $(STAMP)
	$(VENV)/bin/ae-parity bench

clean:
	rm -rf $(VENV) data runs
