"""Results made with code shown to train the same weights count for the present code."""

import json
import shutil
import subprocess
import sys

import pytest

from codistill.engine.code_digest import code_digest
from codistill.study.code_equivalence import append_record, equivalent_codes, read_records
from codistill.study.identity import accepted_identities, is_current, run_identity
from codistill.study.replay import Side, code_digest_of, mismatches, replay, train, worktree
from codistill.study.replay_configurations import (
    REPLAY_MARGIN,
    configurations_in_use,
    replay_iterations,
)
from codistill.study.results import RunSpec, Scoring
from codistill.study.runs import spec_params
from codistill.study.settings import resolve_params
from tests.conftest import REPO_ROOT, TINY_TRAIN, tiny_params_file

pytestmark = pytest.mark.cost(75)


def test_codes_linked_by_a_chain_of_records_either_way_are_equivalent(tmp_path):
    path = tmp_path / "equivalence.json"
    for old, new in (("a", "b"), ("c", "b"), ("d", "e")):
        append_record({"from": old, "to": new}, path)
    append_record({"from": "e", "to": "f", "precisions": ["bf16", "float32"]}, path)
    append_record({"from": "f", "to": "g", "precisions": ["bf16"]}, path)
    records = read_records(path)
    assert equivalent_codes("a", records, "float32") == {"a", "b", "c"}
    assert equivalent_codes("e", records, "float32") == {"d", "e", "f"}
    assert equivalent_codes("z", records, "float32") == {"z"}
    # a replay shows its link in the modes it ran in; one without a mode ran in float32
    assert equivalent_codes("g", records, "bf16") == {"e", "f", "g"}
    assert equivalent_codes("a", records, "bf16") == {"a"}
    with pytest.raises(ValueError, match="nothing to record"):
        append_record({"from": "a", "to": "a"}, path)
    assert len(read_records(path)) == 5


def test_a_result_of_recorded_equivalent_code_counts_and_of_other_code_does_not(
    validated_tiny, tmp_path
):
    prepared, _ = validated_tiny
    params_file = tiny_params_file(tmp_path, "ours", iterations=2)
    params = spec_params(RunSpec("ours-seed0", "ours", 0), params_file)
    scoring = Scoring()
    path = tmp_path / "equivalence.json"
    earlier = {"identity": run_identity(params, prepared, scoring, code="earlier")}
    other = {"identity": run_identity(params, prepared, scoring, code="other")}
    assert not is_current(earlier, accepted_identities(params, prepared, scoring, path))
    append_record({"from": "earlier", "to": code_digest()}, path)
    accepted = accepted_identities(params, prepared, scoring, path)
    assert is_current(earlier, accepted) and not is_current(other, accepted)
    assert is_current({"identity": run_identity(params, prepared, scoring)}, accepted)


def copied_code(tmp_path, module: str, addition: str):
    """A copy of the package's source with ``addition`` appended to ``module``."""
    src = tmp_path / "earlier" / "src"
    shutil.copytree(
        REPO_ROOT / "src", src, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    path = src / "codistill" / module
    path.write_text(path.read_text() + addition)
    return src


SHIFTED_SEED = (
    "import torch as _t\n_seed = _t.manual_seed\n_t.manual_seed = lambda s: _seed(s + 1)\n"
)


@pytest.mark.parametrize(
    ("module", "addition", "expected"),
    [
        ("distill/pixel_bsd.py", "\n# a comment: another digest, the same weights\n", []),
        ("engine/__init__.py", SHIFTED_SEED, ["ours cnn", "ours vit"]),
    ],
)
def test_a_replay_tells_a_change_that_keeps_the_weights_from_one_that_does_not(
    validated_tiny, tmp_path, module, addition, expected
):
    prepared, validation = validated_tiny
    params = tiny_params_file(tmp_path, "ours", iterations=2, checkpoint_every=1)
    earlier = Side("earlier", copied_code(tmp_path, module, addition), params)
    present = Side("present", REPO_ROOT / "src", params)
    assert code_digest_of(earlier) != code_digest_of(present)
    paths = {"prepared": prepared, "validation": validation, "workdir": tmp_path / "work"}
    digests = replay(earlier, present, {"ours": {"train.iterations": 2}}, paths, threads=1)
    assert mismatches(digests) == expected


def test_the_earlier_code_comes_from_a_worktree_that_is_removed_afterwards():
    with worktree("HEAD") as tree:
        assert (tree / "src" / "codistill" / "engine" / "code_digest.py").is_file()
        listed = subprocess.run(
            ["git", "worktree", "list"], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout
        assert str(tree) in listed
    assert not tree.exists()
    listed = subprocess.run(
        ["git", "worktree", "list"], cwd=REPO_ROOT, capture_output=True, text=True
    ).stdout
    assert str(tree) not in listed


def test_a_bad_commit_is_named_before_any_training():
    result = subprocess.run(
        [sys.executable, "-m", "codistill.cli", "study", "replay", "--from", "no-such-commit"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "--from no-such-commit: not a commit of this repository" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_replay_covers_each_setting_in_use_once_and_runs_past_every_warm_up(tmp_path):
    def result(key: str, overrides: dict) -> None:
        folder = tmp_path / "results" / "some-study"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{key}.json").write_text(json.dumps({"key": key, "overrides": overrides}))

    schedule = {"train.iterations": 960, "train.crop": [135, 180], "train.batch_size": 4}
    for seed in (0, 1):  # one setting at two seeds and schedules: one configuration
        result(f"kdcl-seed{seed}", {**schedule, "train.method": "kdcl", "train.seed": seed})
    result("kdcl-long", {"train.method": "kdcl", "train.iterations": 1920})
    # an option of a term the run does not use changes nothing it trains
    result("kdcl-unused", {"train.method": "kdcl", "distill.pbsd.temperature": 9.0})
    result("ours-w3", {"train.method": "ours", "distill.weights.pbsd": 3.0})  # not the default
    result("ours-late", {"train.method": "ours", "distill.warmup_iters": 160})
    (tmp_path / "results" / "records.json").write_text(json.dumps({"records": []}))
    params = REPO_ROOT / "params.yaml"
    found = configurations_in_use(tmp_path / "results", params)
    settings = sorted(json.dumps(s, sort_keys=True) for s in found.values())
    expected = [
        {"train.method": "dml"},
        {"train.method": "independent"},
        {"train.method": "kdcl"},
        {"distill.warmup_iters": 160, "train.method": "ours"},
        {"distill.weights.pbsd": 3.0, "train.method": "ours"},
        {"train.method": "ours"},
    ]
    assert settings == sorted(json.dumps(s, sort_keys=True) for s in expected)
    defaults = resolve_params(params, {})
    longest_default = max(
        defaults.distill.warmup_iters,
        defaults.train.cnn_optimizer.warmup_iters,
        defaults.train.vit_optimizer.warmup_iters,
    )
    steps = {json.dumps(s, sort_keys=True): replay_iterations(s, params) for s in found.values()}
    late = json.dumps({"distill.warmup_iters": 160, "train.method": "ours"}, sort_keys=True)
    assert steps.pop(late) == max(160, longest_default) + REPLAY_MARGIN
    assert set(steps.values()) == {longest_default + REPLAY_MARGIN}


def test_a_reproduction_compares_a_committed_runs_weights_and_records_the_outcome(
    validated_tiny, tmp_path
):
    prepared, validation = validated_tiny
    overrides = {**TINY_TRAIN, "train.method": "ours", "train.iterations": 2}
    with worktree("HEAD") as tree:
        side = Side("head", tree / "src", tree / "params.yaml")
        out = tmp_path / "expected"
        weights = train(side, {**overrides, "train.seed": 3}, prepared, validation, out, 1)
    results = tmp_path / "results" / "tiny"
    results.mkdir(parents=True)
    run = {"overrides": overrides, "seed": 3, "commit": "c0ffee", "code_digest": "d1"}
    record = tmp_path / "reproductions.json"
    command = [sys.executable, "-m", "codistill.cli", "study", "reproduce", "--regime", "tiny"]
    command += ["--results", str(tmp_path / "results"), "--record", str(record)]
    command += ["--prepared", str(prepared), "--validation", str(validation)]
    command += ["--workdir", str(tmp_path / "work")]
    outcomes = []
    for key, expected in (("same", weights), ("other", {**weights, "vit": "0" * 64})):
        (results / f"{key}.json").write_text(json.dumps({**run, "weights_sha256": expected}))
        outcomes.append(
            subprocess.run(
                [*command, "--key", key], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
            )
        )
    assert outcomes[0].returncode == 0, outcomes[0].stderr
    assert (
        outcomes[1].returncode == 1
        and "other: weights differ (vit); recorded" in outcomes[1].stderr
    )
    same, other = json.loads(record.read_text())["records"]
    assert same["same_weights"] is True and same["weights_sha256"] == weights
    assert other["same_weights"] is False and other["weights_sha256"] == weights
    assert same["overrides"] == {**overrides, "train.seed": 3}


def test_a_reproduction_of_a_run_without_weight_digests_is_refused_before_training(tmp_path):
    results = tmp_path / "results" / "tiny"
    results.mkdir(parents=True)
    (results / "old.json").write_text(json.dumps({"overrides": {}, "seed": 0}))
    record = tmp_path / "reproductions.json"
    command = [sys.executable, "-m", "codistill.cli", "study", "reproduce", "--regime", "tiny"]
    command += ["--key", "old", "--results", str(tmp_path / "results"), "--record", str(record)]
    refused = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert "old.json: records no weights_sha256" in refused.stderr
    assert "Traceback" not in refused.stderr and not record.exists()


def test_a_replay_records_the_modes_its_trainings_ran_in_and_both_codes_must_agree(tmp_path):
    from codistill.study.replay import ReplayError, trained_modes

    def metrics(side: str, name: str, precision: str, device: str) -> None:
        folder = tmp_path / side / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "train_metrics.json").write_text(
            json.dumps({"precision": precision, "device": device})
        )

    for side in ("earlier", "present"):
        metrics(side, "a", "float32", "cpu")
        metrics(side, "b", "bf16", "cpu")
        metrics(side, "c", "bf16", "cuda:0")
    configurations = {"a": {}, "b": {}, "c": {}}
    # a GPU's arithmetic never vouches for a CPU's
    assert trained_modes(tmp_path, configurations) == ["bf16", "cuda:0-bf16", "float32"]
    metrics("present", "b", "float32", "cpu")
    with pytest.raises(ReplayError, match="b: the two codes trained in different modes"):
        trained_modes(tmp_path, configurations)
