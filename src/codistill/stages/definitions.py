"""The six stages of the pipeline, each declared once: entry point, artifacts, parameters.

Each entry point is ``run`` in the ``stage`` module of the package that does the work.
"""

from __future__ import annotations

from codistill.stages.spec import ArtifactSpec, Input, OutFile, Stage

DATA = ArtifactSpec("data", "data/${data.dataset}", "Dataset", version_file="data.dvc")


STAGES: tuple[Stage, ...] = (
    Stage(
        name="prepare",
        description="Encode a raw dataset tree into shards, manifest and stats.",
        entry="codistill.data.stage:run",
        inputs=(Input("data"),),
        output=ArtifactSpec("prepared", "build/prepared/${data.dataset}", "Dataset"),
        params=("data.dataset", "prepare"),
    ),
    Stage(
        name="validate",
        description="Check a prepared dataset with the data gate (Great Expectations).",
        entry="codistill.validation.stage:run",
        inputs=(Input("prepared"),),
        output=ArtifactSpec("validation", "build/validate", "Artifact", cache=False),
        params=("validate",),
    ),
    Stage(
        name="train",
        description="Co-train both students (resumes from the last checkpoint).",
        entry="codistill.engine.stage:run",
        inputs=(Input("prepared"), Input("validation")),
        output=ArtifactSpec(
            "students",
            "build/train",
            "Model",
            files=(
                OutFile("last.pt"),  # an interrupted run resumes from it
                OutFile("cnn.pt"),
                OutFile("vit.pt"),
                OutFile("train_metrics.json", cache=False),
                OutFile("curves.csv", cache=False),
            ),
        ),
        params=("models", "train", "distill"),
        resumable=True,
        accelerated=True,
    ),
    Stage(
        name="evaluate",
        description="Score both trained students on a split.",
        entry="codistill.evaluation.stage:run",
        inputs=(
            Input("prepared"),
            Input("validation"),
            Input("students", files=("cnn.pt", "vit.pt")),
        ),
        output=ArtifactSpec(
            "evaluation",
            "build/eval",
            "Artifact",
            files=(
                OutFile("metrics.json", cache=False, metric=True),
                OutFile("report.json", cache=False),
                OutFile("per_class_iou.csv", cache=False),
                OutFile("per_class_iou.png", cache=False),
                OutFile("overlays.png", cache=False),
            ),
        ),
        params=("evaluate", "models"),
    ),
    Stage(
        name="export",
        description=(
            "Export both students to ONNX, check parity with PyTorch, and keep the INT8/FP16 "
            "variants that stay within the mIoU gate."
        ),
        entry="codistill.export.stage:run",
        inputs=(Input("prepared"), Input("students", files=("cnn.pt", "vit.pt"))),
        output=ArtifactSpec("onnx", "build/export", "Model"),
        params=("export", "models", "evaluate.scale", "gates.max_quant_drop_points"),
    ),
    Stage(
        name="publish",
        description=(
            "Write the Triton model repository and register both students in MLflow; "
            "promote those that clear the gate."
        ),
        entry="codistill.publish.stage:run",
        inputs=(Input("evaluation", files=("metrics.json",)), Input("onnx")),
        output=ArtifactSpec("release", "serving/model_repository", "Model"),
        params=("gates.min_miou_points", "serving"),
    ),
)
