import re
import subprocess
import sys

import pytest

from codistill.cli import main
from tests.conftest import REPO_ROOT, write_params


def test_bad_params_exit_2_with_the_key_named(tmp_path, camvid_tree, capsys):
    params = write_params(tmp_path / "params.yaml", {"prepare.jpeg_quality": "high"})
    out = tmp_path / "prepared"
    code = main(["prepare", "--params", str(params), "--data", str(camvid_tree), "--out", str(out)])
    assert code == 2
    assert "prepare.jpeg_quality: expected an integer, got 'high'" in capsys.readouterr().err
    assert not out.exists()


def test_missing_dataset_root_is_named(tmp_path, capsys):
    code = main(
        [
            "prepare",
            "--params",
            str(REPO_ROOT / "params.yaml"),
            "--data",
            str(tmp_path / "nowhere"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert code == 2
    assert "dataset root" in capsys.readouterr().err


def test_prepare_prints_what_it_wrote(tmp_path, camvid_tree, capsys):
    out = tmp_path / "prepared"
    assert (
        main(
            [
                "prepare",
                "--params",
                str(REPO_ROOT / "params.yaml"),
                "--data",
                str(camvid_tree),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "train 6/6, val 2/2, test 3/3 samples in shards" in capsys.readouterr().out


def test_students_command_reports_parameter_counts(capsys):
    assert main(["students", "--params", str(REPO_ROOT / "params.yaml")]) == 0
    counts = dict(re.findall(r"(cnn|vit): .*?([\d.]+) M parameters", capsys.readouterr().out))
    assert 12 <= float(counts["cnn"]) <= 17
    assert 3.5 <= float(counts["vit"]) <= 4.0


def test_a_bad_input_exits_2_in_one_line_and_a_defect_keeps_its_traceback(monkeypatch, capsys):
    import codistill.cli as cli
    from codistill.publish.stage import gate_students

    def publish_without_vit(args):
        return gate_students({"cnn": {"miou": 0.5}}, 0.3)

    monkeypatch.setattr(cli, "_students", publish_without_vit)
    assert main(["students"]) == 2
    assert capsys.readouterr().err == (
        "codistill students: error: evaluation metrics have no entry for vit\n"
    )

    def defect(args):
        return {}["a key the program forgot"]

    monkeypatch.setattr(cli, "_students", defect)
    with pytest.raises(KeyError, match="a key the program forgot"):
        main(["students"])


def test_unknown_encoder_in_params_exits_2_naming_it(tmp_path, capsys):
    params = write_params(tmp_path / "params.yaml", {"models.cnn.encoder": "resnet1800"})
    assert main(["students", "--params", str(params)]) == 2
    assert "unknown timm encoder 'resnet1800'" in capsys.readouterr().err


def test_evaluation_split_without_samples_exits_2_naming_the_splits(
    validated_tiny, tmp_path, capsys
):
    from codistill.config import load_params
    from codistill.engine.trainer import train_students
    from tests.conftest import tiny_params_file

    prepared, report = validated_tiny
    params = tiny_params_file(tmp_path, iterations=1, checkpoint_every=1, log_every=1)
    train_students(load_params(params), prepared, tmp_path / "train")
    params.write_text(params.read_text().replace("split: val", "split: tset"))
    code = main(
        [
            "evaluate",
            "--params",
            str(params),
            "--prepared",
            str(prepared),
            "--validation",
            str(report),
            "--students",
            str(tmp_path / "train"),
            "--out",
            str(tmp_path / "e"),
        ]
    )
    assert code == 2
    assert "split 'tset' has no readable samples (splits: train, val, test)" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "e" / "metrics.json").exists()


HEAVY_LIBRARIES = (
    "torch",
    "timm",
    "mlflow",
    "kfp",
    "great_expectations",
    "onnxruntime",
    "tritonclient",
    "pytriton",
    "dvc",
)


def test_help_imports_none_of_the_heavy_libraries():
    """``codistill --help`` answers without torch, MLflow, kfp, GX or the serving stack."""
    probe = (
        "import sys, contextlib, io\n"
        "from codistill.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        "assert 'serve' in out.getvalue() and 'train' in out.getvalue()\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY_LIBRARIES)!r}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "[]"


def test_loadtest_of_a_running_endpoint_loads_no_training_or_tracking_library(validated_tiny):
    """``codistill loadtest --url`` reads images and sends requests: numpy and tritonclient."""
    from codistill.serving.process import free_port

    prepared, _ = validated_tiny
    probe = (
        "import sys\n"
        "from codistill.cli import main\n"
        f"code = main(['loadtest', '--prepared', {str(prepared)!r}, '--url', "
        f"'127.0.0.1:{free_port()}', '--duration', '0.5', '--concurrency', '1', "
        "'--images', '2', '--model', 'codistill_cnn'])\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        f"print(code, sorted(loaded & {set(HEAVY_LIBRARIES)!r}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "1 ['tritonclient']"  # nothing listens
    assert "Connection refused" in result.stderr


def test_a_crop_larger_than_any_training_image_is_refused_before_training(
    validated_tiny, tmp_path, capsys
):
    from tests.conftest import tiny_params_file

    prepared, validation = validated_tiny
    params = tiny_params_file(tmp_path, changes={"train.crop": [40000, 40000]})
    out = tmp_path / "train"
    argv = ["train", "--params", str(params), "--prepared", str(prepared)]
    argv += ["--validation", str(validation), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "train.crop [40000, 40000] is larger than the largest training image" in err
    assert "(48×64 × 1.25 = 60×80); use at most [60, 80]" in err
    assert not (out / "last.pt").exists()
