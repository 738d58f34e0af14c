from pathlib import Path

import pytest
import yaml

from codistill.config import ConfigError, StudentConfig, from_mapping, load_params
from tests.conftest import over_repo, repo_params_mapping

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def write(tmp_path: Path, text: str) -> Path:
    """A params file: the YAML ``text`` merged over the repository's params.yaml."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(over_repo(yaml.safe_load(text) or {})))
    return path


def test_repository_params_parse_into_typed_objects():
    params = load_params(REPO_PARAMS)
    assert params.data.dataset == "camvid"
    assert params.validate.split_sizes == {"train": 367, "val": 101, "test": 233}
    assert params.validate.class_share.bounds_for("road") == (0.20, 0.45)
    assert params.validate.class_share.bounds_for("sky") == (0.002, 0.45)
    assert params.models.cnn.aspp_rates == (6, 12, 18)
    assert params.models.vit.output_stride is None


def test_params_yaml_is_the_one_source_of_values_so_a_missing_key_is_named(tmp_path):
    """No hidden defaults: every value the pipeline runs with is written in params.yaml."""
    assert load_params(write(tmp_path, "{}\n")) == load_params(REPO_PARAMS)
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}\n")
    with pytest.raises(ConfigError, match=r"empty\.yaml: missing key data$"):
        load_params(empty)
    for section, leaf in (("train", "iterations"), ("distill", "warmup_iters")):
        raw = repo_params_mapping()
        del raw[section][leaf]
        (tmp_path / "partial.yaml").write_text(yaml.safe_dump(raw))
        with pytest.raises(ConfigError, match=rf"missing key {section}\.{leaf}$"):
            load_params(tmp_path / "partial.yaml")


def test_unknown_top_level_key_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key trian"):
        load_params(write(tmp_path, "trian: {}\n"))


def test_unknown_nested_key_is_named_with_its_path(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key prepare\.jpeg_qualty"):
        load_params(write(tmp_path, "prepare:\n  jpeg_qualty: 80\n"))


def test_wrongly_typed_value_names_key_and_value(tmp_path):
    with pytest.raises(ConfigError, match=r"prepare\.shard_mib: expected an integer, got 'big'"):
        load_params(write(tmp_path, "prepare:\n  shard_mib: big\n"))


def test_out_of_range_value_names_key(tmp_path):
    with pytest.raises(ConfigError, match=r"prepare\.jpeg_quality: 101 must be within \[50, 100\]"):
        load_params(write(tmp_path, "prepare:\n  jpeg_quality: 101\n"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train: {cnn_optimizer: {lr: -0.01}}", "train.cnn_optimizer.lr: -0.01 must be positive"),
        ("train: {vit_optimizer: {lr: 0}}", "train.vit_optimizer.lr: 0.0 must be positive"),
        ("train: {seed: -1}", "train.seed: -1 must be within [0, 4.29497e+09]"),
        ("train: {seed: 4294967296}", "train.seed: 4294967296 must be within [0, 4.29497e+09]"),
        ("train: {cnn_optimizer: {momentum: 1.5}}", "momentum: 1.5 must be within [0, 1]"),
        ("train: {vit_optimizer: {weight_decay: -1}}", "weight_decay: -1.0 must not be negative"),
        ("train: {vit_optimizer: {head_lr_mult: 0}}", "head_lr_mult: 0.0 must be positive"),
        ("train: {crop: [4, 180]}", "train.crop[0]: 4 must be at least 8"),
        ("train: {scale: [-0.5, 1.0]}", "train.scale[0]: -0.5 must be positive"),
        ("distill: {weights: {pbsd: -2}}", "distill.weights.pbsd: -2.0 must not be negative"),
        ("distill: {kdcl: {temperature: 0}}", "distill.kdcl.temperature: 0.0 must be positive"),
        ("distill: {rbsd: {window: 0}}", "distill.rbsd.window: 0 must be at least 1"),
        (
            "export: {parity: {min_label_agreement: 0}}",
            "min_label_agreement: 0.0 must be within (0, 1]",
        ),
        ("serving: {instances: 0}", "serving.instances: 0 must be at least 1"),
    ],
)
def test_every_numeric_knob_is_checked_against_the_range_declared_with_it(tmp_path, text, message):
    with pytest.raises(ConfigError) as raised:
        load_params(write(tmp_path, text))
    assert str(raised.value) == message or str(raised.value).endswith(message)
    assert "\n" not in str(raised.value)


def test_a_negative_learning_rate_stops_training_in_one_line_naming_the_key(tmp_path, capsys):
    from codistill.cli import main

    params = write(tmp_path, "train: {cnn_optimizer: {lr: -0.01}}")
    argv = ["train", "--params", str(params), "--prepared", str(tmp_path / "none")]
    argv += ["--validation", str(tmp_path / "none")]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == f"codistill train: error: {params}: train.cnn_optimizer.lr: -0.01 must be positive"
    )
    assert not (tmp_path / "out").exists()


def test_literal_choice_is_enforced(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.dataset: 'kitti' is not one of"):
        load_params(write(tmp_path, "data:\n  dataset: kitti\n"))


def test_bad_share_range_names_the_class(tmp_path):
    text = "validate:\n  class_share:\n    per_class:\n      road: [0.5, 0.1]\n"
    with pytest.raises(ConfigError, match=r"validate\.class_share\.per_class\.road"):
        load_params(write(tmp_path, text))


def test_bool_is_not_accepted_as_number(tmp_path):
    with pytest.raises(ConfigError, match=r"prepare\.max_total_mib: expected a number"):
        load_params(write(tmp_path, "prepare:\n  max_total_mib: true\n"))


def test_missing_required_key_is_named():
    with pytest.raises(ConfigError, match=r"missing key cnn\.encoder"):
        from_mapping(StudentConfig, {"arch": "deeplabv3plus"}, "cnn")


def test_weights_file_requires_pretrained(tmp_path):
    text = "models:\n  vit:\n    arch: segformer\n    encoder: pvt_v2_b0\n    weights_file: w.pth\n"
    with pytest.raises(ConfigError, match=r"models\.vit\.weights_file"):
        load_params(write(tmp_path, text))


def test_invalid_yaml_and_missing_file_name_the_file(tmp_path):
    broken = tmp_path / "params.yaml"
    broken.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match=r"params\.yaml: not valid YAML"):
        load_params(broken)
    with pytest.raises(ConfigError, match=r"nope\.yaml: file not found"):
        load_params(tmp_path / "nope.yaml")


def test_gpu_profile_overrides_only_its_keys(tmp_path):
    text = REPO_PARAMS.read_text().replace("profile: cpu", "profile: gpu", 1)
    base, gpu = load_params(REPO_PARAMS), load_params(write(tmp_path, text))
    assert gpu.train.iterations >= 10000 and gpu.train.batch_size >= 8
    assert gpu.train.crop == (360, 480)
    assert gpu.train.vit_optimizer.lr == 6e-5
    assert gpu.train.vit_optimizer.head_lr_mult == base.train.vit_optimizer.head_lr_mult
    assert gpu.train.method == base.train.method and gpu.models == base.models


def test_unknown_profile_is_named(tmp_path):
    with pytest.raises(ConfigError, match="profile: 'tpu' has no section"):
        load_params(write(tmp_path, "profile: tpu\nprofiles:\n  gpu: {}\n"))


def test_a_profile_cannot_smuggle_an_unknown_key(tmp_path):
    text = "profile: gpu\nprofiles:\n  gpu:\n    train:\n      iteratons: 5\n"
    with pytest.raises(ConfigError, match=r"unknown key train\.iteratons"):
        load_params(write(tmp_path, text))


def test_numbers_written_as_yaml_1_1_strings_are_read_as_numbers(tmp_path):
    text = "train:\n  cnn_optimizer:\n    lr: 1e-2\n  vit_optimizer:\n    lr: 3E-4\n"
    params = load_params(write(tmp_path, text))
    assert params.train.cnn_optimizer.lr == 0.01
    assert params.train.vit_optimizer.lr == 0.0003


@pytest.mark.parametrize("value", ["ten", ".nan", "'inf'", "1e400"])
def test_a_number_that_is_no_finite_number_is_refused(tmp_path, value):
    text = f"train:\n  cnn_optimizer:\n    lr: {value}\n"
    with pytest.raises(ConfigError, match=r"train\.cnn_optimizer\.lr: expected a (finite )?number"):
        load_params(write(tmp_path, text))


def test_the_params_check_reads_every_key_under_every_profile(tmp_path, capsys):
    from codistill.cli import main
    from codistill.pipeline.dvc_yaml import PARAMS_CHECK, render_dvc_yaml

    good = write(tmp_path, "")
    assert main(["pipeline", "params", "--params", str(good)]) == 0
    assert "under profile gpu" in capsys.readouterr().out
    for text, named in (
        ("train: {batch_szie: 8}", "unknown key train.batch_szie"),
        ("profiles: {gpu: {train: {batch_szie: 8}}}", "unknown key train.batch_szie"),
        ("profiles: {gpu: {train: {seed: -3}}}", "train.seed: -3 must be within"),
    ):
        bad = write(tmp_path, text)
        assert main(["pipeline", "params", "--params", str(bad)]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"codistill pipeline: error: {bad}: {named}")
        assert line.endswith("(under profile gpu)") == text.startswith("profiles")
    # in dvc.yaml: the whole file as a parameter dependency, the check as the command
    stage = yaml.safe_load(render_dvc_yaml(repo_params_mapping()))["stages"][PARAMS_CHECK]
    assert stage["params"] == [{"params.yaml": None}] and "outs" not in stage
    assert stage["cmd"] == "codistill pipeline params --params params.yaml"


# Numbers whose allowed values depend on each other, so their class checks them as a whole.
CHECKED_TOGETHER = {
    "validate.class_share.default": ("validate: {class_share: {default: [0.2, 0.1]}}", "default"),
    "validate.class_share.per_class[*]": (
        "validate: {class_share: {per_class: {Sky: [0.0, 1.5]}}}",
        "per_class.Sky: [0.0, 1.5] is not a range within [0, 1]",
    ),
    "models.cnn.output_stride": ("models: {cnn: {output_stride: 7}}", "output_stride: 7"),
    "models.vit.output_stride": ("models: {vit: {output_stride: 12}}", "output_stride: 12"),
    "export.parity.resolutions": (
        "export: {parity: {resolutions: [[8, 8], [64, 64]]}}",
        "needs two or more different sizes of at least 32 px",
    ),
    "export.parity.batch_sizes": (
        "export: {parity: {batch_sizes: [0, 2]}}",
        "batch_sizes: [0, 2] needs two or more sizes ≥ 1",
    ),
    "serving.preferred_batch_sizes": (
        "serving: {preferred_batch_sizes: [0, 4]}",
        "preferred_batch_sizes: [0] not within 1..",
    ),
}


def numbers_without_a_range(tp, path: str = "") -> set[str]:
    """The dotted paths of int and float options under ``tp`` declared without a Range."""
    import dataclasses
    from typing import Annotated, Literal, get_args, get_origin, get_type_hints

    from codistill.config.loader import Range

    origin = get_origin(tp)
    if origin is Annotated:
        base, *meta = get_args(tp)
        if base in (int, float):
            return set() if any(isinstance(m, Range) for m in meta) else {path}
        return numbers_without_a_range(base, path)
    if tp in (int, float):
        return {path}
    if dataclasses.is_dataclass(tp):
        hints = get_type_hints(tp, include_extras=True)
        fields = dataclasses.fields(tp)
        return set().union(
            *(
                numbers_without_a_range(hints[f.name], f"{path}.{f.name}".lstrip("."))
                for f in fields
            )
        )
    if origin is dict:
        return numbers_without_a_range(get_args(tp)[1], f"{path}[*]")
    if origin is Literal:
        return set()
    arguments = [a for a in get_args(tp) if a is not Ellipsis]  # tuples, unions
    return set().union(*(numbers_without_a_range(a, path) for a in arguments))


def test_every_number_in_params_declares_its_range_or_is_checked_with_its_class():
    from codistill.config.schema import Params

    assert numbers_without_a_range(Params) == set(CHECKED_TOGETHER)


@pytest.mark.parametrize(("text", "message"), CHECKED_TOGETHER.values(), ids=CHECKED_TOGETHER)
def test_numbers_checked_with_their_class_refuse_a_bad_value_by_name(tmp_path, text, message):
    with pytest.raises(ConfigError) as raised:
        load_params(write(tmp_path, text))
    assert message in str(raised.value) and "\n" not in str(raised.value)
