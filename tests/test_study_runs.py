"""One study run (codistill.study): identity, resumption, reuse, and the search tables."""

import json
import shutil
from dataclasses import asdict

import pytest
import torch

from codistill.artifacts import write_json_atomic
from codistill.config.loader import load_yaml_mapping
from codistill.evaluation.metrics import mean_iou
from codistill.study.identity import (
    accepted_identities,
    run_identity,
    shaping_train,
    used_distillation,
)
from codistill.study.image_counts import counts_path, read_image_counts
from codistill.study.migration import migrate_folder, rule_1_identities
from codistill.study.plan import load_plan
from codistill.study.provenance import machine, require_one_machine_kind
from codistill.study.results import NotAResultError, RunSpec, Scoring, read_result, result_path
from codistill.study.reuse import borrow
from codistill.study.runs import SNAPSHOTS, claimed, run, spec_params, train_with_snapshots
from codistill.study.scoring import add_missing_counts
from codistill.study.searches import choice_line, chosen_candidate, specs, table_rows
from codistill.study.settings import load_studies, resolve_params
from tests.conftest import REPO_ROOT, tiny_params_file


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
    # the final students' per-image counts sit beside the result and give its scores
    path = result_path(tmp_path / "res", spec.key)
    counts = read_image_counts(counts_path(path))
    assert set(counts.counts) == {("val", "cnn"), ("val", "vit")}
    for role in ("cnn", "vit"):
        summed = counts.counts[("val", role)].sum(axis=0)
        assert mean_iou(summed) == pytest.approx(result["scores"]["val"][role]["miou"])
    # a result without them gets them from its kept students, only if they are its students
    written = counts_path(path).read_bytes()
    counts_path(path).unlink()
    params = spec_params(spec, params_file)
    assert add_missing_counts(spec, params, prepared, path, folder, device)
    assert counts_path(path).read_bytes() == written
    assert not add_missing_counts(spec, params, prepared, path, folder, device)  # has them
    counts_path(path).unlink()
    write_json_atomic(path, {**result, "weights_sha256": {"cnn": "0", "vit": "0"}})
    with pytest.raises(SystemExit, match="not the ones"):
        add_missing_counts(spec, params, prepared, path, folder, device)
    assert not counts_path(path).exists()


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


@pytest.mark.parametrize(
    ("method", "unused", "used"),
    [
        ("independent", {"distill.weights.kdcl": 3.0}, {"train.iterations": 3}),
        ("independent", {"distill.warmup_iters": 7}, {"train.cnn_optimizer.lr": 0.02}),
        ("kdcl", {"distill.pbsd.temperature": 2.0}, {"distill.kdcl.temperature": 2.0}),
        ("kdcl", {"distill.weights.dml": 9.0}, {"distill.weights.kdcl": 9.0}),
        ("ours", {"distill.kdcl.temperature": 2.0}, {"distill.warmup_iters": 7}),
        ("ours", {"tracking.enabled": True}, {"distill.rbsd.margin": 0.2}),
        ("ours", {"train.log_every": 1, "train.num_workers": 1}, {"train.pbsd": False}),
    ],
)
def test_the_identity_holds_the_options_a_run_uses_and_no_other(
    validated_tiny, tmp_path, method, unused, used
):
    prepared, _ = validated_tiny
    params_file = tiny_params_file(tmp_path, method, iterations=2)
    scoring = Scoring()

    def identity(overrides: dict) -> str:
        spec = RunSpec(f"{method}-seed0", method, 0, overrides)
        return run_identity(spec_params(spec, params_file), prepared, scoring, precision="float32")

    assert identity(unused) == identity({})
    assert identity(used) != identity({})


def test_results_of_the_first_identity_rule_are_migrated_where_it_still_counts_them(
    validated_tiny, tmp_path
):
    prepared, _ = validated_tiny
    params_file = tiny_params_file(tmp_path, "kdcl", iterations=2)
    results = tmp_path / "results"
    spec = RunSpec("kdcl-seed0", "kdcl", 0, {"distill.kdcl.temperature": 2.0})
    params = spec_params(spec, params_file)
    scoring = Scoring(splits=("val",))
    old = sorted(rule_1_identities(params, prepared, scoring, "code-a", "float32"))
    assert len(old) == 3  # with the mode, and the two that hashed the amp flag instead
    base = {"seed": 0, "overrides": spec.overrides, "code_digest": "code-a"}
    base |= {"scores": {"val": {}}, "score_last": 1, "label": "kdcl"}
    write_json_atomic(
        results / "kdcl-seed0.json", {**base, "key": "kdcl-seed0", "identity": old[0]}
    )
    made_otherwise = {**base, "key": "kdcl-seed1", "seed": 1, "identity": old[1]}  # seed 0's
    write_json_atomic(results / "kdcl-seed1.json", made_otherwise)
    assert migrate_folder(results, params_file, prepared) == {"migrated": 1, "stale": 1}
    moved = json.loads((results / "kdcl-seed0.json").read_text())
    assert moved["identity_v1"] == old[0]
    assert moved["identity"] == run_identity(params, prepared, scoring, "code-a", "float32")
    assert json.loads((results / "kdcl-seed1.json").read_text()) == made_otherwise
    assert migrate_folder(results, params_file, prepared) == {"present": 1, "stale": 1}
    write_json_atomic(results / "kdcl-seed2.json", {**base, "key": "kdcl-seed2", "seed": 2})
    assert migrate_folder(results, params_file, prepared) == {"present": 1, "stale": 2}
    (results / "kdcl-seed2.json").unlink()  # older than identities: stale, left as it is
    # a file that is not a result stops it by name, before anything is rewritten
    write_json_atomic(
        results / "kdcl-seed0.json", {**base, "key": "kdcl-seed0", "identity": old[0]}
    )
    for text, reason in (
        ("{broken", "not JSON"),
        ('{"identity": "x"}', "not a study result \\(no key, seed, overrides"),
    ):
        (results / "notes.json").write_text(text)
        with pytest.raises(NotAResultError, match=rf"notes\.json: {reason}"):
            migrate_folder(results, params_file, prepared)
        assert json.loads((results / "kdcl-seed0.json").read_text())["identity"] == old[0]


def test_a_result_is_migrated_from_the_configuration_it_records_not_todays_defaults(
    validated_tiny, tmp_path
):
    prepared, _ = validated_tiny
    # made when params.yaml's ViT learning rate was 3e-4; the default is another today
    for folder in ("then", "now"):
        (tmp_path / folder).mkdir()
    then = tiny_params_file(tmp_path / "then", "ours", 2, changes={"train.vit_optimizer.lr": 3e-4})
    now = tiny_params_file(tmp_path / "now", "ours", 2, changes={"train.vit_optimizer.lr": 9e-4})
    spec = RunSpec("ours-seed0", "ours", 0, {})
    made_with = spec_params(spec, then)
    scoring = Scoring(splits=("val",))
    old = sorted(rule_1_identities(made_with, prepared, scoring, "code-a", "float32"))[0]
    result = {"key": spec.key, "seed": 0, "overrides": {}, "code_digest": "code-a"}
    result |= {"scores": {"val": {}}, "score_last": 1, "identity": old}
    result["config"] = json.loads(json.dumps(asdict(made_with)))
    results = tmp_path / "results"
    write_json_atomic(results / "ours-seed0.json", result)
    assert migrate_folder(results, now, prepared) == {"migrated": 1}
    moved = json.loads((results / "ours-seed0.json").read_text())
    # it counts for a row that pins what it was made with, and not for today's default
    pinned = spec_params(RunSpec("ours-seed0", "ours", 0, {"train.vit_optimizer.lr": 3e-4}), now)
    assert moved["identity"] == run_identity(pinned, prepared, scoring, "code-a", "float32")
    today = spec_params(spec, now)
    assert moved["identity"] != run_identity(today, prepared, scoring, "code-a", "float32")
    # a recorded identity that its configuration and code do not give is left as it is
    other_code = {**result, "key": "ours-seed1", "code_digest": "code-b"}
    write_json_atomic(results / "ours-seed1.json", other_code)
    assert migrate_folder(results, now, prepared) == {"present": 1, "stale": 1}


def test_the_identity_holds_the_numeric_mode_not_the_amp_flag(
    validated_tiny, tmp_path, monkeypatch
):
    prepared, _ = validated_tiny
    params_file = tiny_params_file(tmp_path, "ours", iterations=2)
    scoring = Scoring()
    asked = spec_params(RunSpec("ours-seed0", "ours", 0, {"train.amp": True}), params_file)
    off = spec_params(RunSpec("ours-seed0", "ours", 0, {"train.amp": False}), params_file)
    # the flag is not the identity, the mode it resolves to is
    assert run_identity(asked, prepared, scoring, precision="float32") == run_identity(
        off, prepared, scoring, precision="float32"
    )
    assert run_identity(asked, prepared, scoring, precision="bf16") != run_identity(
        asked, prepared, scoring, precision="float32"
    )
    monkeypatch.setenv("CODISTILL_CPU_BF16", "0")  # amp asked for, float32 on this CPU
    float32 = run_identity(asked, prepared, scoring, precision="float32")
    assert float32 in accepted_identities(asked, prepared, scoring)
    monkeypatch.setenv("CODISTILL_CPU_BF16", "1")  # a bf16 run: a float32 result does not count
    accepted = accepted_identities(asked, prepared, scoring)
    assert float32 not in accepted
    assert run_identity(asked, prepared, scoring, precision="bf16") in accepted


def test_a_study_made_on_another_kind_of_machine_is_not_continued_here(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    here = machine(torch.device("cpu"))
    write_json_atomic(results / "a-seed0.json", {"key": "a-seed0", "machine": here})
    require_one_machine_kind(results, torch.device("cpu"))  # the same kind: goes on
    # another CPU model in float32: rounding differs, not the arithmetic, so it goes on
    other_cpu = {**here, "cpu": "Some Other CPU 9000"}
    write_json_atomic(results / "b-seed0.json", {"key": "b-seed0", "machine": other_cpu})
    require_one_machine_kind(results, torch.device("cpu"))
    gpu = {**here, "device": "cuda:0", "gpu": "Some GPU 9000"}
    write_json_atomic(results / "c-seed0.json", {"key": "c-seed0", "machine": gpu})
    with pytest.raises(SystemExit, match=r"made on Some GPU 9000 \(c-seed0\.json\)"):
        require_one_machine_kind(results, torch.device("cpu"))
    (results / "c-seed0.json").unlink()
    # bf16 depends on the CPU: another model, or one name with other bf16 instructions, stops it
    for name, bf16_machine in (
        ("d", {**here, "cpu_bf16": "some_other_bf16"}),
        ("e", {**other_cpu, "cpu_bf16": here.get("cpu_bf16")}),
    ):
        path = results / f"{name}-seed0.json"
        write_json_atomic(path, {"key": path.stem, "machine": bf16_machine, "precision": "bf16"})
        with pytest.raises(SystemExit, match=rf"made on .* \({path.name}\)"):
            require_one_machine_kind(results, torch.device("cpu"))
        path.unlink()


def test_a_run_made_on_another_kind_of_machine_is_not_borrowed(validated_tiny, tmp_path):
    from codistill.engine.code_digest import code_digest

    prepared, _ = validated_tiny
    params_file = tiny_params_file(tmp_path, "independent", iterations=2)
    spec = RunSpec("plain-seed0", "plain", 0)
    params = spec_params(spec, params_file)
    study = Scoring(score_last=1, splits=("val", "test"))
    scores = {"val": {"cnn": {"miou": 0.3}}, "test": {"cnn": {"miou": 0.2}}}
    made = {
        "identity": run_identity(params, prepared, study),
        "code_digest": code_digest(),
        "checkpoints": [{"iteration": 2, **scores}],
        "scores": scores,
        "machine": machine(torch.device("cpu")),
    }
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_json_atomic(
        elsewhere / "independent-seed0.json",
        {**made, "machine": {**made["machine"], "device": "cuda:0", "gpu": "Some GPU 9000"}},
    )
    search = Scoring(score_last=1, splits=("val",))
    results = tmp_path / "search"
    assert borrow(spec, params, prepared, search, results, elsewhere) is None
    here = tmp_path / "here"
    here.mkdir()
    write_json_atomic(here / "independent-seed0.json", made)
    assert borrow(spec, params, prepared, search, results, here) == here / "independent-seed0.json"


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


def test_the_shared_recipe_is_what_make_run_trains_and_the_explored_one_differs_by_pbsd_only():
    params_file = REPO_ROOT / "params.yaml"
    recipes = load_yaml_mapping(REPO_ROOT / "bench" / "studies.yaml")["recipes"]
    make_run = resolve_params(params_file, {})
    assert resolve_params(params_file, recipes["default"]) == make_run
    # the exploratory studies ran at pixel-BSD weight 1; params.yaml ships ours-960's choice
    explored = resolve_params(params_file, recipes["cpu-960"])
    assert explored.distill.weights["pbsd"] == 1.0 != make_run.distill.weights["pbsd"]
    shipped_weight = {"distill.weights.pbsd": make_run.distill.weights["pbsd"]}
    assert resolve_params(params_file, {**recipes["cpu-960"], **shipped_weight}) == make_run


def trained_setting(params) -> tuple:
    """What of a run's parameters shapes its students (the identity's parts but code and data)."""
    return (asdict(params.models), shaping_train(params), used_distillation(params))


def test_the_confirmation_trains_each_searchs_choice_and_ours_as_make_run_ships_it():
    # every committed search result counts (test_dvc_pipeline checks the identities), so the
    # choice is recomputed here from the files alone, by the searches' own rule
    params_file = REPO_ROOT / "params.yaml"
    plan = load_plan(REPO_ROOT / "bench/preregistered/confirm-960.yaml")
    searches = load_studies(REPO_ROOT / "bench/studies.yaml")["searches"]
    for row, search_name in {"ours": "ours-960", "kdcl": "kdcl-960", "dml": "dml-960"}.items():
        search = searches[search_name]
        folder = REPO_ROOT / "bench/results/search" / search_name
        runs = {spec.key: spec for spec in specs(search, [0, 1])}
        results = {name: [] for name in search["candidates"]}
        for key, spec in runs.items():
            result = read_result(result_path(folder, key))
            assert result is not None, f"{search_name}: no result for {key}"
            results[spec.label].append(result)
        choice = chosen_candidate(results, [0, 1], set(runs))
        searched = next(spec.overrides for spec in runs.values() if spec.label == choice)
        planned = resolve_params(params_file, plan.row_overrides(row))
        assert trained_setting(planned) == trained_setting(resolve_params(params_file, searched)), (
            f"{row} is not {search_name}'s choice {choice}"
        )
    make_run = resolve_params(params_file, {})
    assert trained_setting(resolve_params(params_file, plan.row_overrides("ours"))) == (
        trained_setting(make_run)
    )
    assert set(plan.seeds).isdisjoint({0, 1, 2, 3, 4}), "the studies' and searches' seeds"


def test_the_longer_schedule_trains_the_confirmations_rows_longer_and_kdcl_for_ourss_seconds():
    params_file = REPO_ROOT / "params.yaml"
    short = load_plan(REPO_ROOT / "bench/preregistered/confirm-960.yaml")
    long = load_plan(REPO_ROOT / "bench/preregistered/confirm-1920.yaml")
    assert long.seeds == short.seeds and long.split == short.split
    longer = {"train.iterations": 1920, "train.checkpoint_every": 160}
    for row in ("independent", "kdcl", "ours"):
        planned = resolve_params(params_file, long.row_overrides(row))
        expected = resolve_params(params_file, {**short.row_overrides(row), **longer})
        assert trained_setting(planned) == trained_setting(expected), row
    matched = long.row_overrides("kdcl-matched")
    assert matched["train.iterations"] != 1920
    as_kdcl = resolve_params(params_file, {**matched, "train.iterations": 1920})
    assert trained_setting(as_kdcl) == trained_setting(
        resolve_params(params_file, long.row_overrides("kdcl"))
    )


def dotted_keys(mapping: dict, prefix: str = "") -> set[str]:
    """Every key path of a nested mapping, dotted (``train.vit_optimizer.lr``)."""
    keys = set()
    for key, value in mapping.items():
        keys.add(prefix + key)
        if isinstance(value, dict):
            keys |= dotted_keys(value, f"{prefix}{key}.")
    return keys


def test_every_override_in_the_studies_file_names_an_option_of_params_yaml():
    # a misspelled key would be set beside the real one and change nothing: a candidate
    # identical to the default under another name
    known = dotted_keys(load_yaml_mapping(REPO_ROOT / "params.yaml"))
    studies = load_studies(REPO_ROOT / "bench" / "studies.yaml")
    used = {
        f"{name}: {key}"
        for name, search in studies["searches"].items()
        for overrides in (search.get("base", {}), *search["candidates"].values())
        for key in overrides
    }
    used |= {f"{name}: {key}" for name, r in studies["regimes"].items() for key in r["params"]}
    assert "kdcl-960: distill.kdcl.temperature" in used and "dml-960: distill.weights.dml" in used
    assert sorted(u for u in used if u.split(": ")[1] not in known) == []
    assert "distill.kdcl.temprature" not in known


def test_the_baselines_get_a_search_as_wide_as_ours():
    searches = load_studies(REPO_ROOT / "bench" / "studies.yaml")["searches"]
    ours = searches["ours-960"]["candidates"]
    for method in ("kdcl", "dml"):
        search = searches[f"{method}-960"]
        assert search["base"]["train.method"] == method
        # as many distinct candidates as ours had (as trained: a default spelled out is no new
        # candidate), the ninth a weight with a temperature
        assert len(search["candidates"]) >= len(ours)
        params_file = REPO_ROOT / "params.yaml"
        trained = [
            repr(resolve_params(params_file, {**search["base"], **candidate}))
            for candidate in search["candidates"].values()
        ]
        assert len(set(trained)) == len(trained)
        assert any(len(c) == 2 for c in search["candidates"].values())
        knobs = {key for c in search["candidates"].values() for key in c}
        assert knobs == {
            f"distill.weights.{method}",
            f"distill.{method}.temperature",
            "distill.warmup_iters",
        }


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


def test_a_comparing_search_pairs_each_candidate_with_its_twin_and_chooses_nothing():
    def timed(result: dict, mode: str) -> dict:
        work = {"iterations": 10, "iterations_this_run": 10, "train_seconds_this_run": 5.0}
        return {**result, **work, "machine": {"torch_threads": 1}, "precision": mode}

    search = {
        "candidates": {"a-float32": {}, "b-float32": {}, "b-bf16": {}},
        "compare": {"b-bf16": "b-float32"},
        "choose": False,
    }
    results = {
        "a-float32": [timed(search_result(f"a{s}", s, 30, 30), "float32") for s in (0, 1)],
        "b-float32": [timed(search_result(f"b{s}", s, 40 + s, 40), "float32") for s in (0, 1)],
        "b-bf16": [timed(search_result(f"c{s}", s, 41 + s, 39), "bf16") for s in (0, 1)],
    }
    current = {r["key"] for runs in results.values() for r in runs}
    rows = {row[0]: row for row in table_rows(search, results, current)}
    # b-bf16 against its float32 twin (+1 CNN, -1 ViT), not against the first candidate
    assert "(vs b-float32: +1.00" in rows["b-bf16"][3]
    assert "(vs b-float32: -1.00" in rows["b-bf16"][4]
    assert "(vs a-float32: +10.50" in rows["b-float32"][3]
    assert rows["b-bf16"][5] == "0.50 (1, bf16)" and rows["a-float32"][5] == "0.50 (1, float32)"
    assert "chooses nothing" in choice_line(search, results, [0, 1], current)


def test_a_search_made_on_two_cpu_models_times_each_candidate_per_model():
    def timed(result: dict, cpu: str, seconds: float) -> dict:
        work = {"iterations": 10, "iterations_this_run": 10, "train_seconds_this_run": seconds}
        return {**result, **work, "machine": {"torch_threads": 1, "cpu": cpu}}

    search = {"candidates": {"a": {}, "b": {}}}
    results = {
        "a": [timed(search_result(f"a{s}", s, 30, 30), "CPU One", 10.0) for s in (0, 1)],
        "b": [
            timed(search_result("b0", 0, 31, 30), "CPU One", 12.0),
            timed(search_result("b1", 1, 31, 30), "CPU Two", 6.0),
        ],
    }
    current = {r["key"] for runs in results.values() for r in runs}
    rows = {row[0]: row for row in table_rows(search, results, current)}
    # one median over both models would read 0.90 s: a time no machine measured
    assert rows["b"][5] == "1.20 (1, float32, CPU One); 0.60 (1, float32, CPU Two)"
    assert rows["a"][5] == "1.00 (1, float32, CPU One)"
    alone = {"a": results["a"], "b": results["b"][:1]}
    assert table_rows(search, alone, current)[1][5] == "1.20 (1, float32)"
