import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from codistill.config import ConfigError, load_params
from codistill.engine.code_digest import PACKAGE_ROOT, code_digest
from codistill.engine.trainer import train_students
from codistill.serving.process import free_port
from tests.conftest import repo_params, tiny_params_file, write_params

pytestmark = pytest.mark.cost(205)


def train_command(params: Path, prepared: Path, report: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "codistill.cli",
        "train",
        "--params",
        str(params),
        "--prepared",
        str(prepared),
        "--validation",
        str(report),
        "--out",
        str(out),
    ]


def kill_at_first_checkpoint(command: list[str], env: dict, out: Path) -> None:
    """Start a training and SIGKILL it as soon as its first ``last.pt`` exists."""
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 180
    while not (out / "last.pt").exists() and time.monotonic() < deadline:
        assert process.poll() is None, "training ended before it could be killed"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)


def state_dicts_equal(a: Path, b: Path) -> bool:
    left, right = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def test_training_lowers_the_supervised_loss_of_both_methods(validated_tiny, tmp_path):
    prepared, _ = validated_tiny
    for method in ("independent", "ours"):
        params = load_params(
            tiny_params_file(tmp_path, method, iterations=24, log_every=4, checkpoint_every=24)
        )
        metrics = train_students(params, prepared, tmp_path / method)
        curves = (tmp_path / method / "curves.csv").read_text().splitlines()
        header = curves[0].split(",")
        sup = [float(line.split(",")[header.index("loss_sup")]) for line in curves[1:]]
        assert len(sup) == 6
        assert sup[-1] < sup[0] * 0.9, (method, sup)
        expected = [] if method == "independent" else ["hfd", "rbsd", "pbsd"]
        assert metrics["terms"] == expected
        if method == "independent":
            column = header.index("loss_pbsd")
            assert {line.split(",")[column] for line in curves[1:]} == {"0.0"}
        for role in ("cnn", "vit"):
            weights = torch.load(tmp_path / method / f"{role}.pt", weights_only=True)
            assert not any("adapter" in key for key in weights)


def test_crossfeed_mode_trains(validated_tiny, tmp_path):
    prepared, _ = validated_tiny
    params = load_params(tiny_params_file(tmp_path, iterations=2, hfd_mode="crossfeed"))
    metrics = train_students(params, prepared, tmp_path / "run")
    assert metrics["iterations"] == 2 and metrics["final"]["loss_hfd"] > 0


@pytest.mark.parametrize("mode", ["float32", "bf16"])
def test_killed_run_resumes_to_the_same_weights_as_an_uninterrupted_one(
    validated_tiny, tmp_path, mode
):
    prepared, report = validated_tiny
    params = tiny_params_file(
        tmp_path, iterations=6, log_every=2, checkpoint_every=2, changes={"train.amp": True}
    )
    # bf16 on any CPU: the detection is forced either way
    forced = "1" if mode == "bf16" else "0"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CODISTILL_CPU_BF16": forced}
    subprocess.run(
        train_command(params, prepared, report, tmp_path / "whole"),
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )

    killed = tmp_path / "killed"
    kill_at_first_checkpoint(train_command(params, prepared, report, killed), env, killed)
    stopped_at = torch.load(killed / "last.pt", weights_only=True)["iteration"]
    assert 0 < stopped_at < 6
    assert not (killed / "cnn.pt").exists()

    resumed = subprocess.run(
        train_command(params, prepared, report, killed),
        check=True,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert f"resuming from {killed / 'last.pt'} at iteration {stopped_at}" in resumed.stdout
    metrics = json.loads((killed / "train_metrics.json").read_text())
    assert metrics["iterations_this_run"] == 6 - stopped_at
    assert metrics["precision"] == mode
    assert f"train: {mode} (" in resumed.stdout
    for role in ("cnn", "vit"):
        assert state_dicts_equal(tmp_path / "whole" / f"{role}.pt", killed / f"{role}.pt")


def test_a_damaged_last_checkpoint_falls_back_to_the_one_kept_before_it(
    validated_tiny, tmp_path, capsys
):
    prepared, _ = validated_tiny
    params = load_params(tiny_params_file(tmp_path, iterations=6, checkpoint_every=2))
    out = tmp_path / "run"
    whole = train_students(params, prepared, out)
    last, previous = out / "last.pt", out / "last.previous.pt"
    assert torch.load(previous, weights_only=True)["iteration"] == 4
    last.write_bytes(last.read_bytes()[:1000])  # a copy cut short
    capsys.readouterr()
    resumed = train_students(params, prepared, out)
    printed = capsys.readouterr().out
    assert f"train: {last}: not a readable checkpoint (" in printed
    assert f"resuming from {previous} instead" in printed
    assert f"resuming from {previous} at iteration 4" in printed
    assert resumed["iterations_this_run"] == 2
    assert resumed["weights_sha256"] == whole["weights_sha256"]


def test_a_checkpoint_of_code_shown_equivalent_resumes_and_one_of_other_code_does_not(
    validated_tiny, tmp_path, capsys
):
    from codistill.engine.trainer import config_fingerprint

    prepared, _ = validated_tiny
    params = load_params(tiny_params_file(tmp_path, iterations=4, checkpoint_every=2))
    out = tmp_path / "run"
    train_students(params, prepared, out)
    # the checkpoint as code with digest "earlier" would have left it
    state = torch.load(out / "last.pt", weights_only=True)
    manifest = json.loads((prepared / "dataset.json").read_text())["manifest_sha256"]
    state["fingerprint"] = config_fingerprint(params, manifest, "float32", 1, code="earlier")
    torch.save(state, out / "last.pt")
    (out / "last.previous.pt").unlink()
    capsys.readouterr()
    resumed = train_students(params, prepared, out, equivalent_codes=["earlier"])
    assert resumed["iterations_this_run"] == 0
    assert "resuming from" in capsys.readouterr().out
    afresh = train_students(params, prepared, out, equivalent_codes=["other"])
    assert afresh["iterations_this_run"] == 4
    assert "from another configuration or code version" in capsys.readouterr().out


@pytest.mark.parametrize("kept_bytes", [1000, 0])
def test_an_unreadable_checkpoint_with_no_earlier_one_is_named_in_one_line(
    validated_tiny, tmp_path, kept_bytes
):
    prepared, report = validated_tiny
    params = tiny_params_file(tmp_path, iterations=2, checkpoint_every=2)
    out = tmp_path / "run"
    train_students(load_params(params), prepared, out)
    last = out / "last.pt"
    last.write_bytes(last.read_bytes()[:kept_bytes])
    result = subprocess.run(
        train_command(params, prepared, report, out),
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"codistill train: error: {last}: not a readable checkpoint (")
    assert "move it away to train from the start" in line
    assert last.stat().st_size == kept_bytes  # left for the user to look at


def test_checkpoint_from_another_configuration_is_not_resumed(validated_tiny, tmp_path, capsys):
    prepared, _ = validated_tiny
    out = tmp_path / "run"
    train_students(load_params(tiny_params_file(tmp_path, "dml", iterations=2)), prepared, out)
    metrics = train_students(
        load_params(tiny_params_file(tmp_path, "kdcl", iterations=2)), prepared, out
    )
    assert "from another configuration or code version" in capsys.readouterr().out
    assert metrics["iterations_this_run"] == 2 and metrics["terms"] == ["kdcl"]


def test_two_ddp_ranks_on_gloo_end_with_identical_weights(validated_tiny, tmp_path):
    prepared, report = validated_tiny
    params = tiny_params_file(tmp_path, iterations=4, log_every=2, checkpoint_every=2)
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        *train_command(params, prepared, report, out)[1:],
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["ranks_in_sync"] is True
    assert result.stdout.count("trained ours") == 1  # only rank 0 reports
    assert torch.load(out / "last.pt", weights_only=True)["iteration"] == 4


def test_train_refuses_data_without_a_passing_report(validated_tiny, tmp_path):
    prepared, _ = validated_tiny
    params = tiny_params_file(tmp_path)
    result = subprocess.run(
        train_command(params, prepared, tmp_path / "none.json", tmp_path / "out"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "no validation report" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", ["iterations: 0", "crop: [4, 4]", "method: distil"])
def test_bad_train_values_are_named(tmp_path, bad):
    key = bad.split(":")[0]
    path = write_params(tmp_path / "params.yaml", nested={"train": yaml.safe_load(bad)})
    with pytest.raises(Exception, match=rf"train\.{key}"):
        load_params(path)


def test_resume_fingerprint_depends_on_world_size_and_numeric_mode_not_the_amp_flag():
    from codistill.engine.trainer import config_fingerprint

    params = repo_params()
    assert config_fingerprint(params, "m", "float32", 1) != config_fingerprint(
        params, "m", "float32", 2
    )
    assert config_fingerprint(params, "m", "float32", 2) == config_fingerprint(
        params, "m", "float32", 2
    )
    assert config_fingerprint(params, "m", "bf16") != config_fingerprint(params, "m", "float32")
    # amp asked for on a CPU without bf16 trains the same float32 weights as amp off
    flipped = repo_params({"train.amp": not params.train.amp})
    assert config_fingerprint(flipped, "m", "float32") == config_fingerprint(params, "m", "float32")


def test_nproc_relaunches_the_stage_through_torchrun_inside_one_stage_run(validated_tiny, tmp_path):
    from mlflow.tracking import MlflowClient

    prepared, report = validated_tiny
    params = tiny_params_file(tmp_path, iterations=2, log_every=1, tracking=True)
    out = tmp_path / "ddp"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": "lo",
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_EXPERIMENT_NAME": "nproc",
    }
    command = [*train_command(params, prepared, report, out), "--nproc", "2"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "torch.distributed.run --standalone --nproc_per_node=2" in result.stdout
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["ranks_in_sync"] is True
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("nproc").experiment_id])
    stage_runs = [r for r in runs if r.data.tags.get("codistill.stage") == "train"]
    assert len(stage_runs) == 1 and len(runs) == 2  # the parent and one train run
    assert "loss_total" in stage_runs[0].data.metrics  # rank 0 logged into the stage run


def test_a_fresh_output_folder_resumes_from_the_checkpoint_folder(validated_tiny, tmp_path):
    prepared, report = validated_tiny
    params = tiny_params_file(tmp_path, iterations=4, log_every=2, checkpoint_every=2)
    volume = tmp_path / "volume"
    first = [*train_command(params, prepared, report, tmp_path / "pod-1"), "--checkpoint-dir"]
    subprocess.run([*first, str(volume)], check=True, capture_output=True, timeout=300)
    assert not (tmp_path / "pod-1" / "last.pt").exists()  # the checkpoint is on the volume
    second = [*train_command(params, prepared, report, tmp_path / "pod-2"), "--checkpoint-dir"]
    result = subprocess.run(
        [*second, str(volume)], check=True, capture_output=True, text=True, timeout=300
    )
    assert f"resuming from {volume / 'last.pt'} at iteration 4" in result.stdout
    assert state_dicts_equal(tmp_path / "pod-1" / "cnn.pt", tmp_path / "pod-2" / "cnn.pt")
    curves = (tmp_path / "pod-1" / "curves.csv").read_text()
    assert curves.count("\n") == 3 and (tmp_path / "pod-2" / "curves.csv").read_text() == curves


def test_code_digest_follows_the_weight_shaping_code_only(tmp_path):
    """The digest covers what the trainer imports that shapes weights, at any depth."""
    copy = tmp_path / "codistill"
    shutil.copytree(PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    original = code_digest(copy)
    assert original == code_digest(PACKAGE_ROOT)
    for observer in (
        "serving/client.py",  # not imported by the trainer
        "engine/stage.py",  # the stage wrapper
        "engine/tracking.py",  # records the run
        "engine/progress.py",  # prints progress
        "engine/hooks.py",  # observes, checkpoints and logs
        "config/schema.py",  # the identity holds the resolved values
        "data/prepare.py",  # the identity holds the prepared data's manifest
    ):
        source = copy / observer
        source.write_text(source.read_text() + "\n# an edit that trains the same weights\n")
        assert code_digest.__wrapped__(copy) == original, observer
    for shaping in ("distill/pixel_bsd.py", "engine/optim.py", "data/transforms.py"):
        source = copy / shaping
        source.write_text(source.read_text() + "\n# a change\n")
        changed = code_digest.__wrapped__(copy)
        assert changed != original, shaping
        original = changed
    # a module the trainer starts to import is covered from then on
    (copy / "models" / "extra_block.py").write_text("WIDTH = 3\n")
    assert code_digest.__wrapped__(copy) == original
    trainer = copy / "engine" / "trainer.py"
    trainer.write_text("import codistill.models.extra_block  # noqa\n" + trainer.read_text())
    with_import = code_digest.__wrapped__(copy)
    (copy / "models" / "extra_block.py").write_text("WIDTH = 4\n")
    assert code_digest.__wrapped__(copy) != with_import


def params_with(directory: Path, method: str, changes: dict, name: str) -> Path:
    """A tiny params file for ``method`` with nested ``changes`` merged in."""
    data = yaml.safe_load(tiny_params_file(directory, method, iterations=4).read_text())
    for key, value in changes.items():
        section, leaf = key.split(".", 1)
        data.setdefault(section, {})[leaf] = value
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("method", ["ours", "dml", "kdcl"])
def test_a_method_whose_cross_terms_weigh_zero_ends_bit_identical_to_independent(
    validated_tiny, tmp_path, method
):
    """A seed fixes both students' initial weights and the batch stream for every method."""
    prepared, _ = validated_tiny
    zero = {"distill.weights": {"hfd": 0.0, "rbsd": 0.0, "pbsd": 0.0, "dml": 0.0, "kdcl": 0.0}}
    alone = train_students(
        load_params(params_with(tmp_path, "independent", {}, "alone")), prepared, tmp_path / "a"
    )
    muted = train_students(
        load_params(params_with(tmp_path, method, zero, "muted")), prepared, tmp_path / "m"
    )
    assert muted["terms"] != []  # the cross terms ran, with weight 0
    assert muted["weights_sha256"] == alone["weights_sha256"]
    weighted = train_students(
        load_params(params_with(tmp_path, method, {}, "weighted")), prepared, tmp_path / "w"
    )
    assert weighted["weights_sha256"]["cnn"] != alone["weights_sha256"]["cnn"]


def test_ours_logs_which_way_each_selective_term_sent_knowledge(validated_tiny, tmp_path):
    prepared, _ = validated_tiny
    train_students(load_params(params_with(tmp_path, "ours", {}, "ours")), prepared, tmp_path / "o")
    with (tmp_path / "o" / "curves.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    for term in ("rbsd", "pbsd"):
        cnn = [float(r[f"{term}_cnn_teaches"]) for r in rows]
        vit = [float(r[f"{term}_vit_teaches"]) for r in rows]
        # shares of disjoint selections: each within [0, 1], together at most 1, not all zero
        assert all(
            0 <= c <= 1 and 0 <= v <= 1 and c + v <= 1 + 1e-6 for c, v in zip(cnn, vit, strict=True)
        )
        assert sum(cnn) + sum(vit) > 0


def test_class_balance_changes_training_and_is_bounded(validated_tiny, tmp_path):
    prepared, _ = validated_tiny
    plain = train_students(
        load_params(params_with(tmp_path, "independent", {}, "plain")), prepared, tmp_path / "p"
    )
    balanced = train_students(
        load_params(params_with(tmp_path, "independent", {"train.class_balance": 0.5}, "b")),
        prepared,
        tmp_path / "b",
    )
    assert balanced["weights_sha256"] != plain["weights_sha256"]
    with pytest.raises(ConfigError, match=r"train\.class_balance"):
        load_params(params_with(tmp_path, "independent", {"train.class_balance": 1.5}, "bad"))


def test_training_off_a_terminal_prints_one_progress_line_per_log_row(validated_tiny, tmp_path):
    prepared, report = validated_tiny
    params = tiny_params_file(tmp_path, iterations=4, log_every=2, checkpoint_every=4)
    result = subprocess.run(
        train_command(params, prepared, report, tmp_path / "out"),
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("train: iteration")]
    assert [line.split(",")[0] for line in lines] == [
        "train: iteration 2/4",
        "train: iteration 4/4",
    ]
    assert all("loss sup " in line and "images/s, ETA " in line for line in lines)
    assert lines[-1].endswith("ETA 0m00s")


def test_a_checkpoint_that_cannot_be_written_stops_training_in_one_line_keeping_the_last(
    validated_tiny, tmp_path
):
    prepared, report = validated_tiny
    params = tiny_params_file(tmp_path, iterations=4, log_every=2, checkpoint_every=2)
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.run(
        train_command(params, prepared, report, out), env=env, capture_output=True, timeout=300
    )
    assert first.returncode == 0, first.stderr
    kept = (out / "last.pt").read_bytes()
    # a longer schedule: a new run, whose first checkpoint would replace the one kept
    params = tiny_params_file(tmp_path, iterations=8, log_every=2, checkpoint_every=2)

    # a full disk, as far as writes that grow a file can tell; set by a launcher, not a
    # preexec_fn, which can abort in a worker where gRPC's threads run (tests/test_server_launch)
    size = len(kept) // 2
    small_files = (
        "import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, "
        f"({size}, {size})); os.execv(sys.argv[1], sys.argv[1:])"
    )
    again = subprocess.run(
        [sys.executable, "-c", small_files, *train_command(params, prepared, report, out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 2
    (line,) = again.stderr.strip().splitlines()
    assert line == (
        f"codistill train: error: file too large: {out / 'last.pt'}; "
        "the checkpoint before it is kept"
    )
    assert (out / "last.pt").read_bytes() == kept
    assert not [p.name for p in out.iterdir() if p.name.startswith(".last.pt.")]
