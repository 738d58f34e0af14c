"""The MLflow model registry edge: ONNX students as registered model versions with aliases."""

from __future__ import annotations

import os
from pathlib import Path

from codistill.engine.tracking import mlflow_client, mlflow_for_run


def _signature(model: object) -> object:
    import onnx
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec
    from onnx.helper import tensor_dtype_to_np_dtype

    def specs(values: list) -> Schema:
        out = []
        for value in values:
            tensor = value.type.tensor_type
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
            out.append(TensorSpec(tensor_dtype_to_np_dtype(tensor.elem_type), shape, value.name))
        return Schema(out)

    assert isinstance(model, onnx.ModelProto)
    return ModelSignature(inputs=specs(model.graph.input), outputs=specs(model.graph.output))


def register_onnx_students(students: dict[str, tuple[Path, str | None]]) -> dict[str, str]:
    """Log each ONNX file as a version of its registered model; return the versions by name.

    ``students`` maps a registered model name to (ONNX file, alias or None); an alias moves
    to the new version. The models are logged in ``MLFLOW_RUN_ID`` when set (the publish
    stage's nested run), else in a new run.
    """
    import onnx

    run_id = os.environ.get("MLFLOW_RUN_ID") or None
    mlflow = mlflow_for_run(run_id)
    versions = {}
    # One run for all: ending a fluent run also clears MLFLOW_RUN_ID from the environment.
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else "publish"):
        for name, (path, _) in students.items():
            model = onnx.load(str(path))
            info = mlflow.onnx.log_model(
                model,
                name=name.removeprefix("codistill-"),
                registered_model_name=name,
                signature=_signature(model),
                pip_requirements=["onnx", "onnxruntime"],
                save_as_external_data=False,
            )
            versions[name] = str(info.registered_model_version)
    client = mlflow_client()
    for name, (_, alias) in students.items():
        if alias:
            client.set_registered_model_alias(name, alias, versions[name])
    return versions
