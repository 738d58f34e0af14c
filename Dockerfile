# The image of every codistill Kubeflow component: CUDA torch, the package, no dataset.
# Build from the project root (the tag is the one the components name):
#   docker build --build-arg GIT_COMMIT=$(git rev-parse HEAD) -t ghcr.io/codistill/codistill:0.1.0 .
FROM pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime

ARG GIT_COMMIT=unknown
ENV CODISTILL_HOME=/opt/codistill \
    CODISTILL_PARAMS=/opt/codistill/params.yaml \
    CODISTILL_GIT_COMMIT=${GIT_COMMIT} \
    HF_HUB_OFFLINE=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DVC_NO_ANALYTICS=1 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/codistill
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir ".[pipeline,cpu]" && pip check
# Small project metadata only: the default parameters and the data pointer, never the data.
COPY params.yaml data.dvc ./
COPY .dvc/config .dvc/config

# Components run unprivileged. The Kubeflow launcher writes artifacts under /gcs, /minio and
# /s3, so those belong to the user; pods give it their volumes through fsGroup 10001.
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/codistill codistill \
    && mkdir -p /gcs /minio /s3 \
    && chown codistill:codistill /gcs /minio /s3
ENV HOME=/home/codistill
USER 10001:10001
