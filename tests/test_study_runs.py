"""One study run (bench/study.py): identity, resumption, and the paired statistics."""

import math
import shutil
import sys

import pytest
import torch
from scipy.stats import t

from codistill.config.loader import load_yaml_mapping
from tests.conftest import REPO_ROOT, tiny_params_file

sys.path.insert(0, str(REPO_ROOT / "bench"))
from paired import paired_interval
from search import choice_line
from study import (
    SNAPSHOTS,
    RunSpec,
    Scoring,
    claimed,
    load_studies,
    resolve_params,
    run,
    run_identity,
    spec_params,
    train_with_snapshots,
)


def test_paired_interval_is_the_t_interval_of_the_seedwise_differences():
    ours = {0: 31.0, 1: 32.2, 2: 32.6, 3: 40.0}
    reference = {0: 30.0, 1: 31.0, 2: 31.5, 4: 10.0}  # seeds 3 and 4 are not paired
    interval = paired_interval(ours, reference)
    differences = torch.tensor([1.0, 1.2, 1.1], dtype=torch.float64)
    half = t.ppf(0.975, 2) * differences.std().item() / math.sqrt(3)
    assert interval.n == 3
    assert (interval.low, interval.mean, interval.high) == pytest.approx(
        (1.1 - half, 1.1, 1.1 + half)
    )
    assert interval.verdict() == "gain"
    assert paired_interval({0: 1.0, 1: 2.0}, {0: 2.0, 1: 0.0}).verdict() == "no separation"
    assert paired_interval({0: 1.0}, {0: 0.0}).verdict() == "too few seeds"
    assert paired_interval({0: 1.0}, {1: 0.0}) is None


def test_a_run_missing_a_snapshot_it_had_passed_starts_afresh(validated_tiny, tmp_path, capsys):
    prepared, _ = validated_tiny
    params_file = tiny_params_file(tmp_path, "independent", iterations=2, checkpoint_every=1)
    spec = RunSpec("independent-seed0", "independent", 0, {"train.num_workers": 0})
    folder = tmp_path / "work" / spec.key
    # a run killed after its checkpoint at 2, with the snapshot of iteration 1 lost
    train_with_snapshots(spec_params(spec, params_file), prepared, folder, [1, 2])
    shutil.rmtree(folder / SNAPSHOTS / "1")
    scoring = Scoring(score_last=1, splits=("val",))
    device = torch.device("cpu")
    result = run(spec, params_file, prepared, tmp_path / "work", tmp_path / "res", scoring, device)
    assert "snapshots [1] missing at iteration 2; starting afresh" in capsys.readouterr().out
    assert [c["iteration"] for c in result["checkpoints"]] == [1, 2]
    assert result["iterations_this_run"] == 2


def test_a_result_counts_only_for_the_configuration_it_was_made_with(validated_tiny, tmp_path):
    prepared, _ = validated_tiny
    params_file = tiny_params_file(tmp_path, "ours", iterations=2)
    spec = RunSpec("ours-seed0", "ours", 0)
    scoring = Scoring()
    identity = run_identity(spec_params(spec, params_file), prepared, scoring)
    logged_differently = RunSpec("ours-seed0", "ours", 0, {"train.log_every": 1})
    assert run_identity(spec_params(logged_differently, params_file), prepared, scoring) == identity
    for changed in (
        RunSpec("ours-seed0", "ours", 1),
        RunSpec("ours-seed0", "ours", 0, {"distill.pbsd.temperature": 2.0}),
        RunSpec("ours-seed0", "ours", 0, {"evaluate.scale": 0.9}),
    ):
        assert run_identity(spec_params(changed, params_file), prepared, scoring) != identity
    assert run_identity(spec_params(spec, params_file), prepared, Scoring(score_last=2)) != identity


def test_a_run_another_process_is_training_is_skipped_not_trained_twice(
    validated_tiny, tmp_path, capsys
):
    prepared, _ = validated_tiny
    params_file = tiny_params_file(tmp_path, "independent", iterations=2, checkpoint_every=1)
    spec = RunSpec("independent-seed0", "independent", 0, {"train.num_workers": 0})
    scoring = Scoring(score_last=1, splits=("val",))
    work, results = tmp_path / "work", tmp_path / "res"
    with claimed(work / spec.key) as held:
        assert held
        with claimed(work / spec.key) as again:
            assert not again  # a second holder is refused, even within one process
        skipped = run(spec, params_file, prepared, work, results, scoring, torch.device("cpu"))
    assert skipped is None
    assert "independent-seed0: another process is training it; skipped" in capsys.readouterr().out
    assert not (work / spec.key).exists() and not results.exists()


def test_the_recipe_and_regimes_described_as_make_runs_train_exactly_params_yaml():
    params_file = REPO_ROOT / "params.yaml"
    studies_file = REPO_ROOT / "bench" / "studies.yaml"
    make_run = resolve_params(params_file, {})
    shared = load_yaml_mapping(studies_file)["recipes"]["default"]
    assert resolve_params(params_file, shared) == make_run
    regimes = load_studies(studies_file)["regimes"]
    claims = [
        name
        for name, regime in regimes.items()
        if regime["description"].startswith("The default recipe of `make run`:")
    ]
    assert claims, "no regime studies the recipe `make run` trains"
    for name in claims:
        studied = resolve_params(params_file, regimes[name]["params"])
        assert studied == make_run, name


def search_result(key: str, seed: int, cnn: float, vit: float) -> dict:
    scores = {"cnn": {"miou": cnn / 100}, "vit": {"miou": vit / 100}}
    return {"key": key, "seed": seed, "scores": {"val": scores}}


def test_a_search_chooses_by_the_mean_over_students_and_seeds_of_current_runs_only():
    names = ("default", "steady", "lucky", "stale", "half", "cnn-first")
    search = {"candidates": {name: {} for name in names}}
    results = {
        "default": [search_result("default-seed0", 0, 40, 38), search_result("d1", 1, 40, 38)],
        # the best single run, but the lower mean
        "lucky": [search_result("l0", 0, 46, 44), search_result("l1", 1, 34, 32)],
        "steady": [search_result("s0", 0, 41, 39), search_result("s1", 1, 41, 39)],
        # the best mean, but one run made with other code
        "stale": [search_result("x0", 0, 50, 50), search_result("x1", 1, 50, 50)],
        "half": [search_result("h0", 0, 60, 60)],  # seed 1 not run
        # the best CNN, but the ViT counts as much
        "cnn-first": [search_result("c0", 0, 45, 30), search_result("c1", 1, 45, 30)],
    }
    current = {r["key"] for runs in results.values() for r in runs} - {"x1"}
    line = choice_line(search, results, [0, 1], current)
    assert "**steady**, 40.00 against default 39.00; 2 candidate(s) without one yet." in line
    nothing = choice_line(search, {name: [] for name in search["candidates"]}, [0], set())
    assert nothing == "Choice: none yet (no candidate has a current run at every seed)."
