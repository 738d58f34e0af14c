#!/usr/bin/env bash
# The full-resolution quality study on a lent GPU, in one command: bench/gpu_study.sh OUT_DIR
# [options of bench/gpu_study.py]. Installs the package without dependencies (the device image
# has torch, timm, numpy, Pillow, PyYAML, tqdm, onnx and onnxruntime), or puts src/ on the
# path if that fails, then runs bench/gpu_study.py. Needs the prepared shards and the
# validation report (build/prepared/camvid, build/validate) carried with the tree. $PYTHON
# names the interpreter (default: python).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 1 ]]; then
    echo "usage: bench/gpu_study.sh OUT_DIR [bench/gpu_study.py options]" >&2
    exit 2
fi
PYTHON="${PYTHON:-python}"
if ! "$PYTHON" -c "import codistill" 2>/dev/null; then
    "$PYTHON" -m pip install --quiet --no-deps --no-build-isolation -e . 2>/dev/null \
        || export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true DVC_NO_ANALYTICS=1
# The device image has no MLflow: the committed JSONs are the record of these runs.
unset MLFLOW_TRACKING_URI
exec "$PYTHON" bench/gpu_study.py "$@"
