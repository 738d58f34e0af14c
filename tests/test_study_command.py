"""``codistill study``: a pre-registered plan trained, checked and reported end to end."""

from __future__ import annotations

import json
import os
import re

import mlflow
import pytest
import yaml

from codistill.cli import main
from codistill.engine.code_digest import code_digest
from codistill.study.commands import plan_specs
from codistill.study.plan import parse_plan
from codistill.study.preregistration import BLOB_KEY
from codistill.study.provenance import cpu_model
from tests.conftest import REPO_ROOT, git, tiny_params_file
from tests.servers.mlflow_server import mlflow_server

pytestmark = pytest.mark.cost(20)

ROWS = {"independent": {"train.method": "independent"}, "ours": {"train.method": "ours"}}


def write_plan(folder, rows=ROWS, commit=True) -> tuple:
    """A two-row, two-seed plan scored on test, committed in the git repository ``folder``."""
    plan = folder / "confirm-tiny.yaml"
    data = {
        "name": "confirm-tiny",
        "params": {"train.iterations": 2, "train.checkpoint_every": 2},
        "rows": rows,
        "seeds": [5, 6],
        "checkpoint": "last",
        "split": "test",
        "reported": ["val"],
        "primary": [{"row": "ours", "reference": "independent"}],
        "correction": "holm",
    }
    plan.write_text(yaml.safe_dump(data, sort_keys=False))
    if commit:
        git(folder, "add", plan.name)
        git(folder, "commit", "-q", "-m", "plan")
    return plan, git(folder, "hash-object", plan.name)


HEADLINE_BEGIN = "<!-- confirmation-headline: begin -->"
HEADLINE_END = "<!-- confirmation-headline: end -->"
READINGS = {
    "gain": "`ours` scores higher.",
    "loss": "`ours` scores lower.",
    "no separation": "no separation: no claim either way.",
}


def assert_headline_states_its_table(text: str) -> None:
    """The README's headline section: in place, and each primary row said again in words."""
    assert text.startswith(f"# x\n\n{HEADLINE_BEGIN}\nPre-registered confirmation `confirm-tiny`")
    assert text.endswith(f"{HEADLINE_END}\n\nafter\n")
    rows = re.findall(
        r"^\| ours − independent \| (\w+) .*? \| independent \| ([+-][\d.]+) "
        r"\[([+-][\d.]+), ([+-][\d.]+)\] \|.*\| \*\*([a-z ]+)\*\* \|$",
        text,
        re.MULTILINE,
    )
    assert sorted(student for student, *_ in rows) == ["CNN", "ViT"]
    for student, mean, low, high, claim in rows:
        said = f"- {student}, `ours` − `independent`: {mean} points of mIoU (95 % t-interval "
        said += f"[{low}, {high}], Holm p "
        line = next(line for line in text.splitlines() if line.startswith(said))
        assert line.endswith(READINGS[claim])
    separated = sum(claim != "no separation" for *_, claim in rows)
    assert ("**None of the 2 primary comparisons separates" in text) == (separated == 0)
    assert ("**All 2 primary comparisons separate" in text) == (separated == 2)
    assert ("**1 of the 2 primary comparisons separates" in text) == (separated == 1)


def test_the_readme_has_one_section_for_a_plans_headline_above_the_exploration():
    text = (REPO_ROOT / "README.md").read_text()
    assert text.count(HEADLINE_BEGIN) == text.count(HEADLINE_END) == 1
    assert text.index(HEADLINE_BEGIN) < text.index(HEADLINE_END)
    assert text.index(HEADLINE_END) < text.index("<!-- quality-headline: begin -->")


@pytest.fixture
def study(validated_tiny, tmp_path):
    """Options of a study on the tiny data, and a git repository for its plan."""
    prepared, validation = validated_tiny
    repo = tmp_path / "plans"
    repo.mkdir()
    git(repo, "init", "-q")
    params = tiny_params_file(tmp_path, iterations=2, checkpoint_every=2)
    options = ["--params", str(params), "--prepared", str(prepared)]
    options += ["--workdir", str(tmp_path / "work")]
    return repo, options, ["--validation", str(validation), "--threads", "1"]


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


def test_a_plan_is_trained_once_reported_and_frozen_by_its_test_results(
    study, capsys, tracking_uri, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "codistill-study")
    repo, options, run_options = study
    plan, blob = write_plan(repo)
    assert main(["study", "plan", str(plan), *options]) == 1
    listing = capsys.readouterr().out
    assert listing.count(": to train") == 4 and "0 of 4 runs done" in listing
    assert main(["study", "report", str(plan), *options]) == 2
    assert "runs not done: independent-seed5 (to train)" in capsys.readouterr().err

    assert main(["study", "run", str(plan), *options, *run_options]) == 0
    results = repo / "confirm-tiny"
    made = {p.name: json.loads(p.read_text()) for p in results.glob("*.json")}
    assert sorted(made) == [f"{r}-seed{s}.json" for r in ("independent", "ours") for s in (5, 6)]
    assert {r[BLOB_KEY] for r in made.values()} == {blob}
    assert {tuple(sorted(r["scores"])) for r in made.values()} == {("test", "val")}
    assert all((results / f"{key[:-5]}.images.npz").is_file() for key in made)
    # one parent run for the study, a nested run per row and seed, read back from the server
    client = mlflow.MlflowClient(tracking_uri)
    parents = client.search_runs(
        [client.get_experiment_by_name("codistill-study").experiment_id],
        filter_string="tags.study_parent = 'confirm-tiny'",
    )
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    for result in made.values():
        tracked = client.get_run(result["mlflow_run_id"]).data
        assert tracked.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert tracked.tags["study"] == "confirm-tiny"
        assert tracked.tags["study_identity"] == result["identity"]
        assert (tracked.tags["study_row"], tracked.tags["study_seed"]) == (
            result["label"],
            str(result["seed"]),
        )
        assert tracked.metrics["test_vit_miou"] == result["scores"]["test"]["vit"]["miou"]
        curve = client.get_metric_history(result["mlflow_run_id"], "loss_sup")
        assert [m.step for m in curve] == [row["iteration"] for row in result["curves"]]
    capsys.readouterr()

    assert main(["study", "run", str(plan), *options, *run_options]) == 0  # nothing left
    assert "ours-seed5 @" not in capsys.readouterr().out
    assert [
        r.info.run_id
        for r in client.search_runs(
            [parents[0].info.experiment_id], filter_string="tags.study_parent = 'confirm-tiny'"
        )
    ] == [parents[0].info.run_id]  # the same parent, continued
    assert main(["study", "plan", str(plan), *options]) == 0
    assert "4 of 4 runs done" in capsys.readouterr().out
    assert main(["study", "report", str(plan), *options]) == 0
    report = (results / "report.md").read_text()
    assert "Primary comparisons on test (2, Holm-corrected together" in report
    assert "| ours − independent | CNN (DeepLabV3+ R18) | independent |" in report
    assert "| independent | `train.method=independent` |" in report
    # where and with what the runs were made, as their results recorded it
    assert f"- runs made on: {cpu_model()}, {os.cpu_count()} logical cores (4 runs)\n" in report
    assert f"- weight-shaping code: {code_digest()[:12]} (4 runs)\n" in report
    readme = repo / "README.md"
    readme.write_text(f"# x\n\n{HEADLINE_BEGIN}\nrunning\n{HEADLINE_END}\n\nafter\n")
    assert main(["study", "report", str(plan), *options, "--readme", str(readme)]) == 0
    assert_headline_states_its_table(readme.read_text())
    plain = repo / "PLAIN.md"  # no section for the headline: one line, the file unchanged
    plain.write_text("# no section\n")
    capsys.readouterr()
    assert main(["study", "report", str(plan), *options, "--readme", str(plain)]) == 2
    assert f"no {HEADLINE_BEGIN} ... {HEADLINE_END} section" in capsys.readouterr().err
    assert plain.read_text() == "# no section\n"
    missing = repo / "MISSING.md"
    assert main(["study", "report", str(plan), *options, "--readme", str(missing)]) == 2
    assert f"{missing}: no such file for the headline to go in" in capsys.readouterr().err
    assert not missing.exists()

    (results / "ours-seed6.images.npz").unlink()
    assert main(["study", "report", str(plan), *options]) == 2
    assert "ours-seed6: no per-image counts" in capsys.readouterr().err

    plan.write_text(plan.read_text() + "# seeds reconsidered\n")
    git(repo, "commit", "-qam", "edit")
    capsys.readouterr()
    assert main(["study", "report", str(plan), *options]) == 2
    assert "cannot change once the test split has been read" in capsys.readouterr().err


def test_a_plan_trains_seed_by_seed_so_each_seeds_rows_share_a_machine():
    rows = {**ROWS, "kdcl": {"train.method": "kdcl"}}
    data = {"rows": rows, "seeds": [5, 6], "split": "test", "reported": ["val"]}
    data |= {"checkpoint": "last", "correction": "holm"}
    plan = parse_plan({**data, "primary": [{"row": "ours", "reference": "kdcl"}]}, "p.yaml")
    assert [spec.key for spec in plan_specs(plan)] == [
        f"{row}-seed{seed}" for seed in (5, 6) for row in ("independent", "ours", "kdcl")
    ]


def test_a_typo_an_uncommitted_plan_and_a_bad_plan_are_refused_before_training(study, capsys):
    repo, options, run_options = study
    typo = {**ROWS, "ours": {"train.method": "ours", "train.batch_szie": 8}}
    plan, _ = write_plan(repo, rows=typo)
    assert main(["study", "plan", str(plan), *options]) == 2
    assert "batch_szie" in capsys.readouterr().err

    plan, _ = write_plan(repo, commit=False)
    assert main(["study", "run", str(plan), *options, *run_options]) == 2
    assert "differs from its committed version" in capsys.readouterr().err
    assert not (repo / "confirm-tiny").exists() and not any((repo.parent / "work").glob("*"))

    plan.write_text("rows: {}\n")
    assert main(["study", "plan", str(plan), *options]) == 2
    assert "rows must name two rows or more" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--regime", "nope"], "no regime 'nope' (found: tiny)"),
        (["--search", "nope"], "no search 'nope' (found: tiny-search)"),
        (["--search", "tiny-search"], "no results of search 'tiny-search' to report"),
    ],
)
def test_a_report_of_an_unknown_or_unrun_regime_or_search_is_named_in_one_line(
    tmp_path, capsys, flags, message
):
    studies = tmp_path / "studies.yaml"
    regime = {"description": "x", "params": {}, "seeds": [0], "ablation_seeds": []}
    search = {"description": "y", "candidates": {"plain": {}}}
    studies.write_text(
        yaml.safe_dump({"regimes": {"tiny": regime}, "searches": {"tiny-search": search}})
    )
    command = ["study", "report", str(studies), *flags, "--results", str(tmp_path / "none")]
    assert main([*command, "--out", str(tmp_path / "report.md")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "report.md").exists()
