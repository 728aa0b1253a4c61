# koaimg developer commands. Quick start: `make demo` then `make test` (both set up .venv on first use).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The dev/CI path pins the CPU-capable torch wheel; the Dockerfile overrides these for a CUDA build.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
EXTRAS ?= dev,dicom-codecs,stats,report,cluster,qa
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

DEMO_OUT ?= out/demo

demo: setup
	@echo "== koaimg demo 1/3: what is in sample_data/ (one subject, baseline + 6-month MR and ultrasound)"
	$(VENV)/bin/koaimg inspect sample_data
	@echo "== koaimg demo 2/3: measure the baseline and 6-month knee from their label maps"
	@echo "   (the phantom's own labels stand in for segmentation until the segmentation model lands)"
	$(VENV)/bin/koaimg measure sample_data/ground_truth/SAMPLE-01/baseline/MR/labels.nii.gz --side right \
		--subject SAMPLE-01 --visit baseline -o $(DEMO_OUT)/SAMPLE-01/baseline/MR
	$(VENV)/bin/koaimg measure sample_data/ground_truth/SAMPLE-01/month6/MR/labels.nii.gz --side right \
		--subject SAMPLE-01 --visit month6 -o $(DEMO_OUT)/SAMPLE-01/month6/MR
	@echo "== koaimg demo 3/3: outputs in $(DEMO_OUT) (thickness.nii.gz, regions.nii.gz, measures.csv, moaks.json,"
	@echo "   femoral_thickness_map.png per visit)"

bench: setup
	$(PY) pipelines/bench_ingest.py
	$(PY) pipelines/bench_synth.py
	$(PY) pipelines/bench_measure.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info pipelines/out out
