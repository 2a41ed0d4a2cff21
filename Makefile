# i2x: `make demo` runs the whole pipeline on the built-in MNIST digits; `make test` runs the tests.
# Both create .venv and install everything on a fresh machine first.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Official MNIST test set (and CIFAR-10) for the demo: ../shared/data when present, else $I2X_DATA_DIR.
DATA_DIR ?= $(firstword $(wildcard ../shared/data) $(I2X_DATA_DIR))
DEMO_OUT ?= runs/demo

.PHONY: demo test install browser lint bench mutation clean

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

# Mutation testing (docs/TESTING.md), never part of `make test` or CI: each tests/mutation/NAME.toml
# names the modules mutmut mutates and the fast tests that judge every mutant. mutmut rewrites the
# source, so it runs in MUTATION_DIR/NAME, a scratch copy of this working tree (tracked and untracked
# files, not ignored ones: uncommitted tests count) or, with MUTATION_REV=<commit>, of that commit.
# Prints each configuration's survivors and its counts per module; the full log is MUTATION_DIR/NAME.log.
MUTATION_DIR  ?= /tmp/i2x-mutation
MUTATION_JOBS ?= 2
MUTATION_REV  ?=
mutation: install
	@for cfg in tests/mutation/*.toml; do \
	  name=$$(basename $$cfg .toml); dir=$(MUTATION_DIR)/$$name; log=$(MUTATION_DIR)/$$name; \
	  rm -rf $$dir && mkdir -p $$dir || exit 1; \
	  if [ -n "$(MUTATION_REV)" ]; then \
	    git archive $(MUTATION_REV) | tar -x -C $$dir && mkdir -p $$dir/tests/mutation && cp $$cfg $$dir/tests/mutation/; \
	    what="$$(git rev-parse --short $(MUTATION_REV))"; \
	  else \
	    git ls-files -co --exclude-standard | tar -cf - --ignore-failed-read -T - 2>/dev/null | tar -x -C $$dir; \
	    what="$$(git rev-parse --short HEAD) + working tree"; \
	  fi; \
	  cat $$cfg >> $$dir/pyproject.toml; \
	  echo "== $$name ($$what): mutmut in $$dir, log $$log.log"; \
	  start=$$(date +%s); \
	  (cd $$dir && $(abspath $(VENV))/bin/mutmut run --max-children $(MUTATION_JOBS) > $$log.log 2>&1); \
	  (cd $$dir && $(abspath $(VENV))/bin/mutmut results --all true > $$log.results 2>&1); \
	  grep -q ': ' $$log.results || { tail -c 2000 $$log.log; exit 1; }; \
	  grep -v ': killed$$' $$log.results; \
	  awk -F': ' '/: /{m=$$1; sub(/^ */, "", m); sub(/\.[^.]*$$/, "", m); n[m ": " $$2]++} \
	    END{for (k in n) printf "   %-40s %5d\n", k, n[k]}' $$log.results | sort; \
	  echo "   $$(( $$(date +%s) - start )) s"; \
	done

clean:
	rm -rf $(VENV) runs test-artifacts .pytest_cache
