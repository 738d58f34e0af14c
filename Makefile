# The two set-up commands: `make run` (the pipeline on CamVid) and `make test` (the test suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export HF_HUB_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: venv run test lint format generate kfp-local bench clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

venv: $(STAMP)

run: venv
	dvc pull data.dvc
	dvc repro

test: venv
	pytest

lint: venv
	ruff check .
	ruff format --check .
	codistill pipeline dvc --check
	codistill pipeline compile --check

# dvc.yaml, components/ and the compiled pipeline, from the stage registry
generate: venv
	codistill pipeline dvc
	codistill pipeline compile

# the Kubeflow pipeline on this machine, on the pulled CamVid
kfp-local: venv
	dvc pull data.dvc
	codistill pipeline run --local --raw-data data/camvid

# every table of docs/results.md, on the outputs of `make run` (hours on a CPU; quality.py resumes)
bench: venv
	python bench/read_speed.py
	python bench/train_speed.py
	python bench/infer_speed.py --triton
	python bench/quality.py

format: venv
	ruff format .
	ruff check --fix .

clean:
	rm -rf build
