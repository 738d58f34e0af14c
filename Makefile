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

# Two workers on the two cores, one thread each (more threads than cores slows torch many
# times); a test file runs whole on one worker, since its tests share fixtures and order.
test: venv
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 pytest -n 2 --dist loadfile --no-loadscope-reorder

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

# every table of docs/results.md, on the outputs of `make run` (hours on a CPU; the searches and
# the study read back their committed per-run results and train only what is missing; the
# geometry table needs the recipe search's crops-native-eval students on disk, retrained by
# `python bench/search.py recipe --candidates crops-native-eval`)
bench: venv
	python bench/read_speed.py
	python bench/train_speed.py
	python bench/infer_speed.py --triton
	python bench/search.py recipe
	python bench/geometry.py --students build/bench/search/recipe/crops-native-eval-seed0 \
		--result bench/results/search/recipe/crops-native-eval-seed0.json
	python bench/quality.py --threads 1 --shard 0/2 --no-tables & \
		python bench/quality.py --threads 1 --shard 1/2 --no-tables; wait
	python bench/quality.py --no-train

format: venv
	ruff format .
	ruff check --fix .

clean:
	rm -rf build
