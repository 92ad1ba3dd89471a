# `make demo`: create .venv with litgpt's core (CPU torch pinned) and run the offline end-to-end demo.
# `make test`: add the test extra (every optional package and the reference libraries) and run the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: test demo install install-core clean

# The core: what `litgpt` needs to pretrain, finetune, generate and chat (pip's progress bars stay visible).
$(BIN)/.core-installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -c constraints.txt -e .
	touch $@

# Everything the test suite uses (serve, evaluate, bitsandbytes, Triton, transformers, peft, ...).
# litdata is installed without its torchvision requirement: PyPI's torchvision wheel for this torch is a CUDA
# build whose import fails on the CPU wheel, and nothing litgpt uses needs it.
$(BIN)/.installed: $(BIN)/.core-installed
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	$(BIN)/pip install -q -c constraints.txt boto3 obstore tifffile
	$(BIN)/pip install -q -c constraints.txt --no-deps "litdata>=0.2.59"
	touch $@

install-core: $(BIN)/.core-installed

install: $(BIN)/.installed

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

demo: $(BIN)/.core-installed
	$(BIN)/python -m litgpt.demo --out_dir out/demo

clean:
	rm -rf $(VENV) .pytest_cache
