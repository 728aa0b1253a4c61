# koaimg developer commands. Quick start: `make demo` then `make test` (both set up .venv on first use).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The dev/CI path pins the CPU-capable torch wheel; the Dockerfile overrides these for a CUDA build.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS ?= dev,dicom-codecs
PYTEST_ARGS ?=

.PHONY: setup test test-all lint demo sample-data bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install --quiet "$(TORCH_SPEC)" --index-url $(TORCH_INDEX),)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" -e ".[$(EXTRAS)]"
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest -m "" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check koaimg tests pipelines

sample-data: setup
	$(PY) pipelines/make_sample_data.py sample_data

demo: setup
	@echo "koaimg demo: ingestion of sample_data/ (segmentation, measurement and change arrive with later work)"
	$(VENV)/bin/koaimg inspect sample_data

bench: setup
	$(PY) pipelines/bench_ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info pipelines/out
