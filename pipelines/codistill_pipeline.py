"""The codistill Kubeflow pipeline: the registered stages, wired by the artifacts they pass.

Compile with ``codistill pipeline compile``; run locally with ``codistill pipeline run --local``.
"""

from pathlib import Path

from kfp import components, dsl

from codistill.pipeline.kfp_tasks import (
    CHECKPOINT_MOUNT,
    configure_gpu_training,
    use_credentials,
)
from codistill.stages import DATA, STAGES

COMPONENTS = Path(__file__).resolve().parent.parent / "components"
STAGE_COMPONENTS = {
    stage.name: components.load_component_from_file(str(COMPONENTS / f"{stage.name}.yaml"))
    for stage in STAGES
}


@dsl.pipeline(
    name="codistill",
    description="Co-distil a CNN and a ViT segmentation student, evaluate, export, publish.",
)
def codistill_pipeline(
    raw_data_uri: str,
    params_yaml: str = "",
    profile: str = "gpu",
    gpu_limit: int = 1,
    checkpoint_pvc: str = "codistill-checkpoints",
    checkpoint_root: str = CHECKPOINT_MOUNT,
) -> None:
    """Every registered stage in order.

    An empty ``params_yaml`` means the image's params.yaml. ``checkpoint_root`` is where the
    checkpoint volume is mounted; empty keeps checkpoints in the training artifact.
    """
    source = dsl.importer(artifact_uri=raw_data_uri, artifact_class=dsl.Dataset, reimport=False)
    source.set_display_name(DATA.name)
    produced = {DATA.name: source.output}
    for stage in STAGES:
        options = {}
        if stage.resumable:
            options["checkpoint_root"] = checkpoint_root
        if stage.accelerated:
            options["nproc"] = gpu_limit
        task = STAGE_COMPONENTS[stage.name](
            **{name: produced[name] for name in stage.input_names},
            params_yaml=params_yaml,
            profile=profile,
            pipeline_run=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            **options,
        )
        task.set_display_name(stage.name)
        use_credentials(task)
        if stage.accelerated:
            configure_gpu_training(task, gpu_limit, checkpoint_pvc)
        produced[stage.output.name] = task.outputs[stage.output.name]
