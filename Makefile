# The two commands a fresh machine needs: `make run` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The browser-worker drives the system Chromium (Playwright cannot download its own here).
CHROMIUM := /usr/bin/chromium

.PHONY: run test test-all lint bench install clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found (clawbus needs Python 3.11+); set PYTHON=..." >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[embedded,browser,dev]"
	@touch $(STAMP)

$(CHROMIUM):
	@command -v apt-get >/dev/null 2>&1 || { echo "make: $(CHROMIUM) missing and no apt-get: install Chromium there (the browser-worker needs it)" >&2; exit 1; }
	@echo "make: $(CHROMIUM) missing: installing Debian's chromium package (apt-get install chromium)"
	@if [ "$$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  set -x; $$SUDO apt-get update -q && $$SUDO apt-get install -y -q --no-install-recommends chromium

install: $(STAMP)

run: $(STAMP) $(CHROMIUM)
	$(VENV)/bin/clawbus up

# The bounded suite (slow chaos/soak tests excluded). Exit code 5 (no tests) is a failure.
test: $(STAMP) $(CHROMIUM)
	$(PY) -m pytest -m "not slow" -q

test-all: $(STAMP) $(CHROMIUM)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
