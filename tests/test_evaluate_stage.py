import json

from PIL import Image

from codistill.cli import main
from codistill.config import load_params
from codistill.engine.trainer import train_students
from codistill.evaluation.stage import run_evaluation
from tests.conftest import TRAIN_SIZE, tiny_params_file


def test_evaluate_writes_metrics_report_csv_and_pictures(validated_tiny, tmp_path, capsys):
    prepared, report = validated_tiny
    params_path = tiny_params_file(tmp_path, iterations=2)
    train_students(load_params(params_path), prepared, tmp_path / "train")
    out = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                "--params",
                str(params_path),
                "--prepared",
                str(prepared),
                "--validation",
                str(report),
                "--students",
                str(tmp_path / "train"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert "evaluate val: 2/2 images, " in capsys.readouterr().out  # progress off a terminal
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "val" and set(metrics) == {"split", "cnn", "vit"}
    details = json.loads((out / "report.json").read_text())
    stats = json.loads((prepared / "stats.json").read_text())
    labelled = stats["splits"]["val"]["labelled_pixels"]
    for role in ("cnn", "vit"):
        assert 0.0 <= metrics[role]["miou"] <= 1.0 and metrics[role]["images_per_s"] > 0
        confusion = details[role]["confusion"]
        assert len(confusion) == 11
        assert sum(map(sum, confusion)) == labelled
        assert list(details[role]["per_class_iou"]) == details["class_names"]
    rows = (out / "per_class_iou.csv").read_text().splitlines()
    assert rows[0] == "class,cnn,vit" and len(rows) == 12
    assert Image.open(out / "per_class_iou.png").size[0] > 100
    grid = Image.open(out / "overlays.png")
    assert grid.size == (4 * TRAIN_SIZE[1], 2 * (TRAIN_SIZE[0] + 16))


def test_evaluate_matches_a_second_scoring_of_the_same_weights(validated_tiny, tmp_path):
    prepared, _ = validated_tiny
    params = load_params(tiny_params_file(tmp_path, iterations=2))
    train_students(params, prepared, tmp_path / "train")
    first = run_evaluation(params, prepared, tmp_path / "train", tmp_path / "a")
    second = run_evaluation(params, prepared, tmp_path / "train", tmp_path / "b")
    assert first["cnn"]["miou"] == second["cnn"]["miou"]
    assert first["vit"]["pixel_accuracy"] == second["vit"]["pixel_accuracy"]


def test_evaluate_without_trained_students_names_the_missing_file(validated_tiny, tmp_path, capsys):
    prepared, report = validated_tiny
    code = main(
        [
            "evaluate",
            "--params",
            str(tiny_params_file(tmp_path)),
            "--prepared",
            str(prepared),
            "--validation",
            str(report),
            "--students",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    assert code == 2
    assert "no trained cnn student; run the train stage" in capsys.readouterr().err


def test_evaluate_at_a_scale_too_small_for_the_students_names_the_knob(
    validated_tiny, tmp_path, capsys
):
    prepared, report = validated_tiny
    params_path = tiny_params_file(tmp_path, iterations=1)
    train_students(load_params(params_path), prepared, tmp_path / "train")
    smaller = {"train.scale": [0.5, 1.25], "evaluate.scale": 0.5}
    shrunk = tiny_params_file(tmp_path, iterations=1, changes=smaller, name="shrunk.yaml")
    common = ["--prepared", str(prepared), "--validation", str(report)]
    common += ["--students", str(tmp_path / "train"), "--out", str(tmp_path / "eval")]
    code = main(["evaluate", "--params", str(shrunk), *common])
    assert code == 2
    err = capsys.readouterr().err
    assert "evaluate.scale 0.5 shrinks val image" in err and "(48×64) to 24×32" in err
    assert not (tmp_path / "eval" / "metrics.json").exists()
    assert main(["evaluate", "--params", str(params_path), *common]) == 0
