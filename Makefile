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
	$(BIN)/pip install -c constraints.txt -e . --config-settings editable_mode=compat
	touch $@

# Everything the test suite uses (serve, evaluate, bitsandbytes, Triton, transformers, peft, ...).
# litdata is installed without its torchvision requirement: PyPI's torchvision wheel for this torch is a CUDA
# build whose import fails on the CPU wheel, and nothing litgpt uses needs it.
$(BIN)/.installed: $(BIN)/.core-installed
	$(BIN)/pip install -q -c constraints.txt -e ".[test]" --config-settings editable_mode=compat
	$(BIN)/pip install -q -c constraints.txt boto3 obstore tifffile
	$(BIN)/pip install -q -c constraints.txt --no-deps "litdata>=0.2.59"
	# llama.cpp, the reference the GGUF export is checked against: only a source package here (about 7 to 14
	# minutes to compile on 2 cores, once per fresh .venv)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/pip install -q -c constraints.txt "llama-cpp-python==0.3.36"
	touch $@

install-core: $(BIN)/.core-installed

install: $(BIN)/.installed

# CI runs everything, the tests marked slow too; a plain `pytest` (pyproject's addopts) leaves those out.
test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m "slow or not slow" $(PYTEST_ARGS)

demo: $(BIN)/.core-installed
	$(BIN)/python -m litgpt.demo --out_dir out/demo

clean:
	rm -rf $(VENV) .pytest_cache

# GPU acceptance (tests/gpu/check.py, tutorials/gpu.md). `make gpu-wheels` here, with network: the wheels a bare
# CUDA machine (Python 3.12 with torch, triton, lightning, transformers and peft) lacks, for manylinux x86-64,
# in the git-ignored .wheels/ that travels with the checkout (< 60 MB). `make gpu-check` there, offline:
# installs them with --no-index and runs the check (at most 8 minutes on one H100 / H200).
GPU_PYTHON ?= python3
GPU_OUT ?= out/gpu-check
GPU_ARGS ?=
WHEELS := .wheels
WHEELS_MAX_MB := 60
GPU_PACKAGES := "bitsandbytes>=0.45" "jsonargparse[signatures]>=4.32" "litserve>=0.2.19" jinja2 pytest
GPU_PLATFORM := --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
	--platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
	--platform manylinux2014_x86_64 --platform manylinux1_x86_64

.PHONY: gpu-wheels gpu-check

gpu-wheels: $(BIN)/.core-installed
	rm -rf $(WHEELS) && mkdir -p $(WHEELS)
	$(BIN)/pip download -q --no-deps $(GPU_PLATFORM) -d $(WHEELS) $(word 1,$(GPU_PACKAGES))
	$(BIN)/pip download -q $(GPU_PLATFORM) -d $(WHEELS) $(wordlist 2,$(words $(GPU_PACKAGES)),$(GPU_PACKAGES))
	$(BIN)/python -c "import pathlib, sys; w = list(pathlib.Path('$(WHEELS)').glob('*.whl')); mb = sum(f.stat().st_size for f in w) / 2**20; print(f'$(WHEELS)/: {len(w)} wheels, {mb:.1f} MB (limit $(WHEELS_MAX_MB) MB)'); sys.exit(mb > $(WHEELS_MAX_MB))"

gpu-check:
	PIP_BREAK_SYSTEM_PACKAGES=1 $(GPU_PYTHON) -m pip install -q --no-index --find-links $(WHEELS) $(GPU_PACKAGES)
	$(GPU_PYTHON) tests/gpu/check.py --out $(GPU_OUT) $(GPU_ARGS)
