# Two commands for a fresh machine:  `make blobs` (main job) and `make test` (test suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.13.0 (CPU) and torchvision 0.28.0 are the builds this project is tested with; pyproject
# accepts any torch 2.x and torchvision you bring.
TORCH ?= torch==2.13.0 torchvision==0.28.0

.PHONY: setup blobs test bench
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[test,onnx]"
	touch $@

blobs: setup
	$(VENV)/bin/dann run blobs $(ARGS)

test: setup
	$(PY) -m pytest -q $(ARGS)
