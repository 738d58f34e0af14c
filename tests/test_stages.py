"""The stage registry, and the files generated from it: dvc.yaml, components, pipeline."""

import shutil

import pytest
import yaml

from codistill.cli import build_parser, main
from codistill.pipeline.dvc_yaml import render_dvc_yaml
from codistill.pipeline.generated import PIPELINE_MODULE, stale_files
from codistill.stages import DATA, STAGES, artifacts, get_stage, stage_edges
from tests.conftest import REPO_ROOT, repo_params_mapping


def test_every_input_is_written_by_an_earlier_stage_or_is_the_raw_data():
    available = {DATA.name}
    for stage in STAGES:
        missing = set(stage.input_names) - available
        assert not missing, f"{stage.name} reads {missing} before any stage writes it"
        available.add(stage.output.name)
    assert [s.name for s in STAGES] == [
        "prepare",
        "validate",
        "train",
        "evaluate",
        "export",
        "publish",
    ]


def test_each_stage_writes_its_own_folder():
    paths = [spec.path for spec in artifacts().values()]
    assert len(set(paths)) == len(paths)
    assert all(p.startswith("build/") for p in paths[1:-1])
    assert paths[-1] == "serving/model_repository"  # publish: what Triton loads


def test_the_cli_has_one_command_per_stage_with_a_flag_per_artifact():
    parser = build_parser()
    for stage in STAGES:
        argv = [stage.name, *(f"--{n}=x" for n in stage.input_names), "--out=y"]
        args = parser.parse_args(argv)
        assert args.stage is stage
        assert {n: str(getattr(args, n)) for n in stage.input_names} == dict.fromkeys(
            stage.input_names, "x"
        )
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--prepared=x", "--out=y"])  # no --validation


def test_each_stage_runs_its_packages_stage_module_on_the_declared_artifacts():
    import inspect

    from codistill.stage_result import StageSummary

    packages = set()
    for stage in STAGES:
        module, _, function = stage.entry.partition(":")
        assert module.startswith("codistill.") and module.endswith(".stage") and function == "run"
        packages.add(module)
        signature = inspect.signature(stage.load())
        extra = ["checkpoint_dir"] if stage.resumable else []
        assert list(signature.parameters) == ["params", *stage.input_names, "out", *extra]
        assert signature.return_annotation in ("StageSummary", StageSummary)
    assert len(packages) == len(STAGES)  # one package, one stage


def test_unknown_stage_is_named():
    with pytest.raises(KeyError, match="no stage 'fit'"):
        get_stage("fit")


PROFILES = {
    "gpu": {
        "train": {"iterations": 9, "log_every": 5},
        "gates": {"min_miou_points": 60.0},
        "evaluate": {"scale": 1.0},
    },
    "tiny": {},
}
PARAMS = {**repo_params_mapping(), "profiles": PROFILES}


def test_dvc_yaml_stages_read_the_declared_params_and_pass_the_declared_artifacts():
    document = yaml.safe_load(render_dvc_yaml(PARAMS))
    known = artifacts()
    for stage in STAGES:
        entry = document["stages"][stage.name]
        own = [key for key in entry["params"] if not key.startswith("profile")]
        assert all(key.startswith(tuple(stage.params)) for key in own), stage.name
        assert {key.split(".")[0] for key in own} == {key.split(".")[0] for key in stage.params}
        for name in stage.input_names:
            assert f"--{name} {known[name].path}" in entry["cmd"]
        assert entry["cmd"].startswith(f"codistill {stage.name} ")
    train_outs = document["stages"]["train"]["outs"]
    assert {"build/train/last.pt": {"persist": True}} in train_outs
    assert {"build/train/curves.csv": {"persist": True, "cache": False}} in train_outs
    # DVC deletes no output before a stage runs: a failed stage keeps the previous ones
    for entry in document["stages"].values():
        for out in [*entry.get("outs", []), *entry.get("metrics", [])]:
            ((path, options),) = out.items()
            assert options["persist"] is True, path
    assert document["metrics"] == ["build/eval/metrics.json"]
    # prepare is keyed to the hash data.dvc records, and checks the folder against it
    prepare = document["stages"]["prepare"]
    assert document["vars"] == [DATA.version_file] == ["data.dvc"]
    assert not any(dep.startswith("data") for dep in prepare["deps"])
    assert "--data-version data.dvc --data-version-md5 ${outs[0].md5}" in prepare["cmd"]


def test_a_stage_depends_on_each_value_it_reads_and_each_profile_value_over_one():
    stages = yaml.safe_load(render_dvc_yaml(PARAMS))["stages"]
    train = stages["train"]["params"]
    assert {"train.iterations", "train.cnn_optimizer.lr", "models.cnn.aspp_rates"} <= set(train)
    assert {"distill.weights", "distill.rbsd.window", "distill.pbsd.rule"} <= set(train)
    # how a run is logged or fed is no reason to retrain, in the base or in a profile
    for knob in ("train.log_every", "train.num_workers"):
        assert not any(knob in key for entry in stages.values() for key in entry["params"])
    assert train[train.index("profile") :] == ["profile", "profiles.gpu.train.iterations"]
    serving = [key for key in stages["publish"]["params"] if key.startswith("serving.")]
    assert len(serving) == len(repo_params_mapping()["serving"]) >= 7
    assert stages["publish"]["params"][-2:] == ["profile", "profiles.gpu.gates.min_miou_points"]
    # the gpu profile overrides gates.min_miou_points, not the gate export reads, and the scale
    # export bakes into the graphs
    export = stages["export"]["params"]
    assert {
        "export.parity.max_abs_logit_diff",
        "evaluate.scale",
        "gates.max_quant_drop_points",
    } <= set(export)
    assert "gates.min_miou_points" not in export and "evaluate.split" not in export
    assert export[-2:] == ["profile", "profiles.gpu.evaluate.scale"]
    assert stages["prepare"]["params"] == [  # no profile touches it
        "data.dataset",
        "prepare.jpeg_quality",
        "prepare.shard_mib",
        "prepare.max_total_mib",
    ]


def test_committed_dvc_yaml_equals_the_generated_one():
    assert stale_files(REPO_ROOT, "dvc") == []


def test_a_hand_edit_of_dvc_yaml_is_caught(tmp_path, capsys):
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    text = (tmp_path / "dvc.yaml").read_text()
    (tmp_path / "dvc.yaml").write_text(text.replace("    - prepare.shard_mib\n", ""))
    assert main(["pipeline", "dvc", "--check", "--root", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "+    - prepare.shard_mib\n" in captured.out and "codistill pipeline dvc" in captured.err
    # a value that a profile starts to override is a dependency the committed file lacks
    (tmp_path / "dvc.yaml").write_text(text)
    params = (tmp_path / "params.yaml").read_text()
    assert "\n    train:\n      iterations: 40000\n" in params
    more = params.replace("\n    train:\n", "\n    train:\n      seed: 7\n", 1)
    (tmp_path / "params.yaml").write_text(more)
    assert main(["pipeline", "dvc", "--check", "--root", str(tmp_path)]) == 1
    assert "+    - profiles.gpu.train.seed\n" in capsys.readouterr().out


def test_committed_components_and_pipeline_equal_a_fresh_compile():
    assert stale_files(REPO_ROOT, "compile") == []


def test_a_stale_component_is_caught(tmp_path):
    for name in ("components", "pipelines"):
        shutil.copytree(REPO_ROOT / name, tmp_path / name)
    component = tmp_path / "components" / "train.yaml"
    component.write_text(component.read_text().replace("nproc", "processes"))
    diffs = stale_files(tmp_path, "compile")
    assert diffs and "components/train.yaml" in diffs[0]
    assert (tmp_path / PIPELINE_MODULE).is_file()


def test_stage_edges_follow_the_artifacts():
    assert stage_edges() == {
        ("prepare", "validate"),
        ("prepare", "train"),
        ("validate", "train"),
        ("prepare", "evaluate"),
        ("validate", "evaluate"),
        ("train", "evaluate"),
        ("prepare", "export"),
        ("train", "export"),
        ("evaluate", "publish"),
        ("export", "publish"),
    }
