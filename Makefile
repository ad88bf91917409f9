# hfmed: `make demo` runs the main job, `make test` runs lint and the test suite.
# Both create .venv and install `-e .[dev]` on first use (and again when pyproject.toml changes).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE ?= 1
export GRADIO_ANALYTICS_ENABLED = False
export TOKENIZERS_PARALLELISM = false

.PHONY: install demo test lint bench clean browser fix-copies

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# make demo: every family's demo (FAMILY=<name>: one family; RETRAIN=1: train again, not reuse the runs).
RETRAIN ?=
FAMILY ?=
demo: $(STAMP)
	$(PY) -m hfmed.cli demo $(if $(FAMILY),--family $(FAMILY),) $(if $(RETRAIN),--retrain,)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m tests.check_copies

fix-copies: $(STAMP)
	$(PY) -m tests.check_copies --fix

# The Space tests render pages in headless Chromium. `make test` provides it: already there, or installed
# with apt-get when this user is root or has passwordless sudo; otherwise it stops at once with one line.
BROWSER_FIX = sudo apt-get install -y chromium
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" -eq 0 ]; then SUDO=; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO=sudo; \
	  else echo "make test: chromium is missing (the Space tests render pages in it); install it with: $(BROWSER_FIX)" >&2; exit 1; fi; \
	  command -v apt-get >/dev/null 2>&1 || { echo "make test: chromium is missing and this machine has no apt-get; install Chromium with your package manager" >&2; exit 1; }; \
	  echo "make test: installing chromium (apt-get) for the Space browser tests"; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: browser lint
	$(PY) -m pytest -q

# Every family against its anchor, ratios from one run; writes docs/benchmarks.md and docs/benchmarks.json.
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
