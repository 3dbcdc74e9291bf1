# On a fresh machine (see README):
#   make demo   set up .venv and run GSEA on the embedded SIMULATED demo cohort
#   make test   set up .venv with the test extras and run the test suite
#   make docs   set up .venv with the docs extras and build docs/_build/html (warnings are errors)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# An editable install leaves byte-compiling to the first import, which never happens where
# PYTHONDONTWRITEBYTECODE is set (containers, CI): compile once here, as pip does for a
# wheel, so a run does not spend ~65 ms compiling the package's sources on every start.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m compileall -q src
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

$(VENV)/.installed-docs: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/permenrich demo

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

# The tutorials run during the build (sphinx-gallery), so a failing one fails the build.
docs: $(VENV)/.installed-docs
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) docs/_build docs/generated docs/auto_tutorials demo_out demo_cohort_out demo_meta_out data/demo_cohort.h5ad data/confounded_* data/meta_*
