# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
FOCUS_VENV ?= .venv-focus
FOCUS_STAMP := $(FOCUS_VENV)/.installed-stamp

.PHONY: demo test serve bench clean

# (Re)install when pyproject.toml changes; creates the virtual environment if it is missing. pip's
# and the build backend's chatter goes to a log, shown only when the install fails, so that what
# `make demo` prints is the demo's banner.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing heteroplane and its dependencies into $(VENV) (log: $(VENV)/install.log)"
	@{ $(BIN)/python -m pip install --upgrade pip && $(BIN)/python -m pip install -e '.[dev,kernels]'; } \
		>$(VENV)/install.log 2>&1 || { tail -n 40 $(VENV)/install.log; echo "install failed: see $(VENV)/install.log"; exit 1; }
	@touch $(STAMP)

demo: $(STAMP)
	@$(BIN)/heteroplane demo

serve: $(STAMP)
	$(BIN)/heteroplane serve

# The FOCUS validator the export tests run, in an environment of its own (its pins clash with ours).
$(FOCUS_STAMP): tests/focus/requirements.txt
	@test -x $(FOCUS_VENV)/bin/python || $(PYTHON) -m venv $(FOCUS_VENV)
	$(FOCUS_VENV)/bin/python -m pip install --quiet -r tests/focus/requirements.txt
	@touch $(FOCUS_STAMP)

test: $(STAMP) $(FOCUS_STAMP)
	$(BIN)/pytest

clean:
	rm -rf $(VENV) $(FOCUS_VENV) data artifacts .pytest_cache .hypothesis
