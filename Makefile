# i2x: `make demo` runs the whole pipeline on the built-in MNIST digits; `make test` runs the tests.
# Both create .venv and install everything on a fresh machine first.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Official MNIST test set (and CIFAR-10) for the demo: ../shared/data when present, else $I2X_DATA_DIR.
DATA_DIR ?= $(firstword $(wildcard ../shared/data) $(I2X_DATA_DIR))
DEMO_OUT ?= runs/demo

.PHONY: demo test install browser lint bench clean

install: $(VENV)/.installed

# torch/torchvision first, pinned to the builds this machine's pip can install offline (a CUDA
# build that runs on CPU); then the package with its test extras, editable.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test]"
	touch $@

demo: install
	$(VENV)/bin/i2x run --out $(DEMO_OUT) --overwrite $(if $(DATA_DIR),--data-dir $(DATA_DIR))

# The report's browser test needs Debian's chromium; install it where missing (root only).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: browser tests will be skipped"; }

test: install browser lint
	$(if $(DATA_DIR),I2X_DATA_DIR=$(abspath $(DATA_DIR))) $(PY) -m pytest -q

# The one lint command (make test runs it first): ruff's rules, line length 120, and its formatter.
LINTED := src tests benchmarks examples
lint: install
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)

bench: install
	$(PY) benchmarks/bench_saliency.py

clean:
	rm -rf $(VENV) runs test-artifacts .pytest_cache
