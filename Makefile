# `make test`: create .venv, install litgpt with its test extra (CPU torch pinned), run the suite.
# `make demo`: the offline end-to-end demo (pretrain a small model on text that ships with CPython).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: test demo install clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	touch $@

install: $(BIN)/.installed

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

demo: $(BIN)/.installed
	$(BIN)/python -m litgpt.demo --out_dir out/demo

clean:
	rm -rf $(VENV) .pytest_cache
