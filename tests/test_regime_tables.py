"""A regime's tables, built from per-run results (codistill.study.regime_tables)."""

from codistill.study.regime_tables import (
    REGIME_FIXES_SCORING,
    ablation_rows,
    checkpoint_choice_lines,
    class_lines,
    diagnostics_summary,
    probe_lines,
    tuned_lines,
)


def study_run(seed: int, val: list[float], seconds_per_step: float = 1.0, threads: int = 1):
    """A finished run whose students both scored ``val`` (fractions) at its checkpoints."""
    iterations = 2 * len(val)
    return {
        "seed": seed,
        "iterations": iterations,
        "iterations_this_run": iterations,
        "train_seconds_this_run": seconds_per_step * iterations,
        "machine": {"cpu": "Test CPU", "cores": 2, "torch_threads": threads},
        "checkpoints": [
            {"iteration": 2 * (i + 1), "val": {"cnn": {"miou": v}, "vit": {"miou": v}}}
            for i, v in enumerate(val)
        ],
    }


def test_the_checkpoint_choice_takes_the_spread_of_the_paired_difference():
    # Seed offsets shared by both methods cancel in the pairing; kdcl's own noise has the
    # opposite sign at its last two checkpoints, so their mean is the steadiest score.
    offsets, noise = [0.00, 0.05, -0.04, 0.02], [0.010, -0.004, 0.006, -0.012]
    results = {
        "independent": [
            study_run(s, [0.25 + o, 0.30 + o, 0.30 + o]) for s, o in enumerate(offsets)
        ],
        "kdcl": [
            study_run(s, [0.32 + o + 3 * n, 0.32 + o - n, 0.32 + o + n])
            for s, (o, n) in enumerate(zip(offsets, noise, strict=True))
        ],
    }
    lines = checkpoint_choice_lines(results, score_last=1)
    cnn_row = next(line for line in lines if line.startswith("| CNN") and "kdcl" in line)
    last_one, last_two, last_three = cnn_row.strip("|").split("|")[2:]
    assert last_two.strip() == "+2.00 (sd 0.00)"
    assert "(sd 0.00)" not in last_one and "(sd 0.00)" not in last_three
    assert lines[-1] == (
        "The steadiest is the last 2; the study scores the last 1, as " + REGIME_FIXES_SCORING
    )
    assert checkpoint_choice_lines(results, score_last=2)[-1] == (
        "The steadiest is the last 2; the study scores the last 2."
    )
    assert checkpoint_choice_lines({"independent": results["independent"]}, 1) == []


def test_the_probe_says_whether_the_curve_is_flat_and_what_the_main_table_costs():
    def results(late_gain: float, threads: int = 1):
        curve = [0.20, 0.30, 0.36, 0.36 + late_gain / 100]
        return {
            label: [
                study_run(seed, curve, seconds_per_step=900.0, threads=threads) for seed in (0, 1)
            ]
            for label in ("independent", "dml", "kdcl", "ours")
        }

    regime = {"seeds": [0, 1], "budget_hours": 6}
    # 2 seeds × 8 iterations × 4 methods × 900 s, two single-thread runs at a time: 8 hours
    steep = "\n".join(probe_lines(results(3.0), regime))
    assert "cnn +3.00 points, vit +3.00 points: not flat" in steep
    assert "takes about 8.0 hours of training on the runs' CPU (Test CPU)" in steep
    assert "beyond the study's budget of 6 hours" in steep and "does not fit" in steep
    flat = "\n".join(probe_lines(results(0.5), {**regime, "budget_hours": 10}))
    assert ": flat (under 1 point)" in flat
    assert "within the study's budget of 10 hours" in flat and "would hold" not in flat
    # 8 iterations take 8 hours, so a 10-hour budget holds 10 iterations
    roomy = "\n".join(probe_lines(results(3.0), {**regime, "budget_hours": 10}))
    assert "not flat, and the budget would hold about 10 iterations" in roomy
    one_at_a_time = "\n".join(probe_lines(results(0.5, threads=2), regime))
    assert "1 run(s) at a time" in one_at_a_time and "about 16.0 hours" in one_at_a_time
    # a method without a step time counts at `independent`'s, and the text names it
    partial = {k: v for k, v in results(3.0).items() if k in ("independent", "ours")}
    partial_text = "\n".join(probe_lines(partial, regime))
    assert "; dml, kdcl not yet timed, counted at `independent`'s step time" in partial_text
    assert "takes about 8.0 hours" in partial_text
    assert "counted at" not in steep
    assert "median over uninterrupted runs: independent 900.00 s" in steep
    # runs on another CPU model do not enter the step times: theirs are not this CPU's
    mixed = results(3.0)
    for run in mixed["dml"]:
        run["machine"] = {**run["machine"], "cpu": "Other CPU"}
        run["train_seconds_this_run"] /= 2
    mixed_text = "\n".join(probe_lines(mixed, regime))
    assert "runs on Test CPU (of 2 CPU models): independent 900.00 s, kdcl" in mixed_text
    assert "dml" in mixed_text.split("; ")[-1] and "450" not in mixed_text


def scored_run(seed: int, per_class: list[float]):
    """A run whose students both scored ``per_class`` IoU (fractions) on the test split."""
    test = {"miou": sum(per_class) / len(per_class), "per_class_iou": per_class}
    return {"seed": seed, "scores": {"test": {"cnn": test, "vit": test}}}


def test_the_class_table_pairs_each_class_against_independent_and_the_better_baseline():
    jitter = [0.0, 0.01, -0.01]
    results = {
        "independent": [scored_run(s, [0.50 + j, 0.10 + j]) for s, j in enumerate(jitter)],
        "dml": [scored_run(s, [0.40 + j, 0.10 + j]) for s, j in enumerate(jitter)],
        # kdcl is the better baseline: better on "thin", level on "road"
        "kdcl": [scored_run(s, [0.50 + j, 0.16 + j]) for s, j in enumerate(jitter)],
        # ours: +4 points on "road" against both, -3 points on "thin" against kdcl
        "ours": [scored_run(s, [0.54 + j, 0.13 + j]) for s, j in enumerate(jitter)],
    }
    lines = class_lines(results, "ours", ("road", "thin"))
    assert "Of these 8 intervals" in lines[1]
    assert "| class | independent IoU (%) | ours − independent | ours − kdcl |" in lines
    road = next(line for line in lines if line.startswith("| road"))
    thin = next(line for line in lines if line.startswith("| thin"))
    assert "+4.00 [+4.00, +4.00] (n=3) gain" in road.split("|")[3]
    assert "+4.00 [+4.00, +4.00] (n=3) gain" in road.split("|")[4]
    assert "+3.00 [+3.00, +3.00] (n=3) gain" in thin.split("|")[3]
    assert "-3.00 [-3.00, -3.00] (n=3) loss" in thin.split("|")[4]
    assert class_lines({**results, "ours": []}, "ours", ("road", "thin")) == [
        "",
        "No paired `ours` and `independent` runs yet.",
    ]


def test_an_ablation_row_is_paired_with_independent_and_with_every_term_on():
    jitter = [0.0, 0.02, -0.01]
    results = {
        "independent": [scored_run(s, [0.30 + j]) for s, j in enumerate(jitter)],
        # one term alone: +1 point over independent, 2 points under every term on
        "one term": [scored_run(s, [0.31 + j]) for s, j in enumerate(jitter)],
        "all": [scored_run(s, [0.33 + j]) for s, j in enumerate([*jitter, 0.5])],
        "never run": [],
    }
    rows = ablation_rows(results, ["one term", "all", "never run"], [0, 1, 2], "all")
    one_term, whole, never = rows
    assert one_term[:2] == ["one term", "3"]
    assert one_term[4] == one_term[5] == "+1.00 [+1.00, +1.00] (n=3) gain"
    assert one_term[6] == one_term[7] == "-2.00 [-2.00, -2.00] (n=3) loss"
    # the seed outside the ablation's seeds is left out of the row's own count and scores
    assert whole[1] == "3" and whole[4] == "+3.00 [+3.00, +3.00] (n=3) gain"
    assert whole[6] == whole[7] == "-"
    assert never[2] == "not run"


def test_a_tuned_row_is_paired_with_its_method_default():
    jitter = [0.0, 0.02, -0.01]
    results = {
        "ours": [scored_run(s, [0.30 + j]) for s, j in enumerate(jitter)],
        "ours (tuned)": [scored_run(s, [0.305 + j]) for s, j in enumerate(jitter)],
        "ours (untried)": [],
    }
    (line,) = tuned_lines(results, {"ours (tuned)": "ours", "ours (untried)": "ours"})
    assert line.startswith("`ours (tuned)` − `ours` (the default)")
    assert "CNN (DeepLabV3+ R18) +0.50 [+0.50, +0.50] (n=3) gain" in line
    assert "ViT (SegFormer-style) +0.50 [+0.50, +0.50] (n=3) gain" in line


def logged_run(sup: float, terms: dict[str, float], weights: dict[str, float]):
    """An `ours` run of 8 iterations logged every 2 with constant losses and even shares."""
    shares = {f"{b}_{r}_teaches": 0.5 for b in ("rbsd", "pbsd") for r in ("cnn", "vit")}
    row = {"loss_sup": sup, **{f"loss_{t}": v for t, v in terms.items()}, **shares}
    return {
        "iterations": 8,
        "terms": list(terms),
        "config": {"distill": {"weights": weights}},
        "curves": [{"iteration": i, **row} for i in (2, 4, 6, 8)],
    }


def test_the_diagnostics_summary_weighs_each_term_by_its_weight_in_the_total():
    weights = {"hfd": 0.3, "rbsd": 1.0, "pbsd": 6.0, "dml": 1.0, "kdcl": 1.0}
    terms = {"hfd": 0.4, "rbsd": 0.2, "pbsd": 0.1}
    (line,) = diagnostics_summary([logged_run(2.0, terms, weights)])
    assert "hfd 0.20 (×0.3 = 0.06), rbsd 0.10 (×1 = 0.10), pbsd 0.05 (×6 = 0.30)" in line
    assert "(every one below 1)" in line
    heavy = {**weights, "pbsd": 30.0}
    (line,) = diagnostics_summary([logged_run(2.0, terms, heavy)])
    assert "pbsd 0.05 (×30 = 1.50) (not all below 1)" in line
