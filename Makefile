# koaimg developer commands. Quick start: `make demo` then `make test` (both set up .venv on first use).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The dev/CI path pins the CPU-capable torch wheel; the Dockerfile overrides these for a CUDA build.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS ?= dev,dicom-codecs,stats,report,cluster,qa
PYTEST_ARGS ?=

.PHONY: setup browser-deps test test-all lint demo sample-data bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install --quiet "$(TORCH_SPEC)" --index-url $(TORCH_INDEX),)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)" -e ".[$(EXTRAS)]"
	touch $@

setup: $(VENV)/.installed

# The browser tests (QA app, report rendering) drive a system Chromium through Playwright, never a downloaded one:
# install the distribution's package when we are root with apt-get; otherwise those tests skip and say why.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    { timeout 600 apt-get install -y -qq chromium >/dev/null 2>&1 || \
	      { timeout 300 apt-get update -qq >/dev/null 2>&1 && \
	        timeout 600 apt-get install -y -qq chromium >/dev/null 2>&1; }; } || \
	    echo "chromium could not be installed: the browser tests will be skipped"; \
	  else echo "no chromium (and no root apt-get): the browser tests will be skipped"; fi; }

test: setup browser-deps
	$(PY) -m pytest $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest -m "" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check koaimg tests pipelines

sample-data: setup
	$(PY) pipelines/make_sample_data.py sample_data

DEMO_OUT ?= out/demo

demo: setup
	@echo "== koaimg demo 1/2: what is in sample_data/ (one subject, baseline + 6-month MR and ultrasound)"
	$(VENV)/bin/koaimg inspect sample_data
	@echo "== koaimg demo 2/2: koaimg run on sample_data/SAMPLE-01: every visit and modality, then the 6-month change"
	@echo "   (the phantom's true label maps in sample_data/ground_truth stand in for the segmentation model)"
	$(VENV)/bin/koaimg run sample_data/SAMPLE-01 $(DEMO_OUT) --labels-dir sample_data/ground_truth --workers 2
	@echo "== outputs in $(DEMO_OUT): SAMPLE-01/<visit>/<MR|US>/report.html (+ NIfTI, measures.csv, moaks.json, dicom/),"
	@echo "   SAMPLE-01/change_baseline_month6/report.html (+ change.csv), run manifest koaimg_manifest.sqlite"

bench: setup
	$(PY) pipelines/bench_ingest.py
	$(PY) pipelines/bench_synth.py
	$(PY) pipelines/bench_measure.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info pipelines/out out
