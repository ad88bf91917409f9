# hfmed: `make demo` runs the main job, `make test` runs lint and the test suite.
# Both create .venv and install `-e .[dev]` on first use (and again when pyproject.toml changes).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE ?= 1
export GRADIO_ANALYTICS_ENABLED = False
export TOKENIZERS_PARALLELISM = false

.PHONY: install demo test lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

RETRAIN ?=
demo: $(STAMP)
	$(PY) -m hfmed.cli demo $(if $(RETRAIN),--retrain,)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pytest -q benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
