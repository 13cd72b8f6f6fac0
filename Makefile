# The two newcomer commands: `make run` (the main job) and `make test` (the suite).
# Both create .venv and install what they need on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

run: $(STAMP)
	$(BIN)/feedwarden run

test: $(STAMP) $(VENV)/.system-deps
	$(BIN)/python -m pytest -q -ra

lint: $(STAMP)
	$(BIN)/ruff check feedwarden tests
	$(BIN)/mypy feedwarden

bench: $(STAMP)
	$(BIN)/feedwarden bench

# torch must be 2.13.0 (the CPU wheel this workplace keeps on disk); the pin
# lives in pyproject's `train` extra.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[train,dev]'
	touch $(STAMP)

# promtool and the Prometheus server come from Debian; tests that need them skip without.
$(VENV)/.system-deps:
	command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null; fi; }
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
