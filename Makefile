# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test serve bench clean

# (Re)install when pyproject.toml changes; creates the virtual environment if it is missing.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/heteroplane demo

serve: $(STAMP)
	$(BIN)/heteroplane serve

test: $(STAMP)
	$(BIN)/pytest

clean:
	rm -rf $(VENV) data artifacts .pytest_cache .hypothesis
