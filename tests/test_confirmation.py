"""The pre-registered plan's parser and the confirmation's analysis, on counts of known truth."""

from __future__ import annotations

import numpy as np
import pytest

from codistill.study.confirmation import confirm
from codistill.study.image_counts import ImageCounts
from codistill.study.plan import IncompleteStudyError, PlanError, parse_plan
from codistill.study.tables import confirmation_lines

SEEDS = [5, 6, 7, 8, 9]
CLASSES = ("road", "building", "tree")
IMAGES = 12
UNION = 100


def plan_data(**changes) -> dict:
    data = {
        "name": "confirm-test",
        "params": {"train.iterations": 960},
        "rows": {
            "independent": {"train.method": "independent"},
            "dml": {"train.method": "dml"},
            "kdcl": {"train.method": "kdcl", "distill.weights.kdcl": 3.0},
            "ours": {"train.method": "ours", "distill.weights.pbsd": 6.0},
        },
        "seeds": SEEDS,
        "checkpoint": "last",
        "split": "test",
        "reported": ["val"],
        "primary": [
            {"row": "ours", "better_of": ["dml", "kdcl"]},
            {"row": "ours", "reference": "independent"},
        ],
        "correction": "holm",
    }
    return {**data, **changes}


def test_a_plan_fixes_rows_seeds_and_the_primary_family_and_lists_the_rest_as_secondary():
    plan = parse_plan(plan_data(), "confirm-test.yaml")
    assert plan.seeds == tuple(SEEDS) and plan.students == ("cnn", "vit")
    assert plan.row_overrides("kdcl") == {
        "train.iterations": 960,
        "train.method": "kdcl",
        "distill.weights.kdcl": 3.0,
    }
    assert [c.label for c in plan.primary] == [
        "ours − better of (dml, kdcl)",
        "ours − independent",
    ]
    assert [c.label for c in plan.secondary()] == [
        "dml − independent",
        "kdcl − independent",
        "kdcl − dml",
        "ours − dml",
        "ours − kdcl",
    ]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seed": [5]}, r"unknown key\(s\) \['seed'\]"),
        ({"seeds": [5, 5]}, "seeds must be distinct"),
        ({"split": "train"}, "split must be one of"),
        ({"reported": ["test"]}, "reported must name splits other than 'test'"),
        ({"checkpoint": "best"}, "checkpoint must be one of"),
        ({"rows": {"a": {"train.method": "ours"}, "b": {}}}, "row 'b' must be a mapping"),
        ({"primary": [{"row": "ours", "reference": "kd"}]}, "'kd' is not one of the rows"),
        (
            {"primary": [{"row": "ours", "reference": "dml", "better_of": ["kdcl"]}]},
            "needs either reference or better_of, not both",
        ),
        ({"alpha": 5}, "alpha 5 not in"),
        ({"name": "../elsewhere"}, "name '../elsewhere' must be letters"),
    ],
)
def test_a_malformed_plan_is_refused_with_the_key_named(changes, message):
    with pytest.raises(PlanError, match=message):
        parse_plan(plan_data(**changes), "confirm-test.yaml")


def counts_for(intersections: np.ndarray) -> np.ndarray:
    """N×2×K counts with the given N×K intersections and a union of UNION everywhere."""
    return np.stack([intersections, np.full_like(intersections, UNION)], axis=1)


def make_runs(gain: dict[str, float], validation_bonus: dict[str, float]) -> dict:
    """Per row and seed, counts on both splits: a shared base per seed, plus each row's effect.

    ``gain[row]`` adds IoU points to the building class on both splits, with seed noise;
    ``validation_bonus[row]`` adds points to every class on validation only. kdcl differs
    from dml by +1, -1, +1, -1, 0 points of road IoU: a mean difference of exactly 0.
    """
    generator = np.random.default_rng(0)
    runs: dict[str, dict[int, ImageCounts]] = {}
    base = {seed: generator.integers(30, 60, size=(IMAGES, len(CLASSES))) for seed in SEEDS}
    wobble = dict(zip(SEEDS, [1, -1, 1, -1, 0], strict=True))
    for row in ("independent", "dml", "kdcl", "ours"):
        runs[row] = {}
        for seed in SEEDS:
            test = base[seed].copy()
            if row in gain:
                test[:, 1] += round(gain[row] + generator.normal(0, 0.5))
            if row == "kdcl":
                test[:, 0] += wobble[seed]
            validation = test + round(validation_bonus.get(row, 0))
            ids = {"test": tuple(f"t{i}" for i in range(IMAGES)), "val": ("v0", "v1")}
            counts = {}
            for student in ("cnn", "vit"):
                counts[("test", student)] = counts_for(test)
                counts[("val", student)] = counts_for(validation[:2])
            runs[row][seed] = ImageCounts(ids, counts)
    return runs


def test_the_primary_claims_follow_holm_and_the_gain_is_traced_to_its_class():
    plan = parse_plan(plan_data(), "confirm-test.yaml")
    # ours gains 9 building IoU points (3 mIoU) over every other row; kdcl ties dml on test
    # (max would keep dml, the first) but leads on validation, where the pick is made.
    runs = make_runs(gain={"ours": 9.0}, validation_bonus={"kdcl": 5.0})
    result = confirm(plan, runs, CLASSES)
    assert [(o.comparison.label, o.student, o.reference) for o in result.primary] == [
        ("ours − better of (dml, kdcl)", "cnn", "kdcl"),
        ("ours − better of (dml, kdcl)", "vit", "kdcl"),
        ("ours − independent", "cnn", "independent"),
        ("ours − independent", "vit", "independent"),
    ]
    smallest = min(o.p_value for o in result.primary)
    for o in result.primary:
        assert o.adjusted_p >= o.p_value
        assert o.claim(plan.alpha) == "gain"
        assert 2.5 < o.interval.mean < 3.5 and o.interval.low > 0
        assert o.bootstrap.low > 0
        # the whole gain is building's: its IoU moves, and without it the gain is gone
        assert o.per_class["building"].low > 5
        assert abs(o.leave_one_out["building"].mean) < 0.5
        assert o.leave_one_out["road"].low > 0
        assert o.largest_gain_class() == "building"
    assert min(o.adjusted_p for o in result.primary) == pytest.approx(4 * smallest)
    kdcl_dml = next(o for o in result.secondary if o.comparison.label == "kdcl − dml")
    assert kdcl_dml.interval.mean == pytest.approx(0, abs=1e-9)
    assert kdcl_dml.claim(plan.alpha) == "secondary: no claim"
    text = "\n".join(confirmation_lines(result, runs, CLASSES))
    assert text.count("**gain**") == 4 and "Holm-corrected together" in text
    assert "| ours − kdcl | CNN (DeepLabV3+ R18) | building | +9.40 [" in text


def test_a_null_effect_makes_no_claim():
    plan = parse_plan(plan_data(primary=[{"row": "kdcl", "reference": "dml"}]), "p.yaml")
    result = confirm(plan, make_runs(gain={}, validation_bonus={}), CLASSES)
    assert {o.claim(plan.alpha) for o in result.primary} == {"no separation"}
    assert all(o.interval.low < 0 < o.interval.high for o in result.primary)


def test_a_missing_run_or_other_images_are_refused_by_name():
    plan = parse_plan(plan_data(), "confirm-test.yaml")
    runs = make_runs(gain={}, validation_bonus={})
    del runs["kdcl"][7]
    with pytest.raises(IncompleteStudyError, match="no counts for kdcl seed 7"):
        confirm(plan, runs, CLASSES)
    runs = make_runs(gain={}, validation_bonus={})
    moved = runs["dml"][8]
    runs["dml"][8] = ImageCounts({**moved.ids, "test": moved.ids["test"][::-1]}, moved.counts)
    with pytest.raises(IncompleteStudyError, match="dml seed 8 was scored on other test images"):
        confirm(plan, runs, CLASSES)
