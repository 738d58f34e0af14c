"""The term registry: each distillation term is declared once, and everything derives from it."""

from dataclasses import fields

import pytest

from codistill.config import (
    METHODS,
    SWITCHABLE_TERMS,
    TERM_NAMES,
    TERMS,
    ConfigError,
    DistillConfig,
    TrainConfig,
    active_terms,
    parse_params,
)
from codistill.config.terms import check_presets
from codistill.distill import build_term, list_terms, registry
from codistill.distill.objective import DIRECTION_SHARES
from codistill.engine.progress import CURVE_TERMS
from tests.conftest import over_repo, repo_params, repo_params_mapping
from tests.distill_inputs import CHANNELS


def test_every_declared_term_has_a_loss_module_and_a_section_and_a_weight():
    assert list_terms() == list(TERM_NAMES) == ["hfd", "rbsd", "pbsd", "dml", "kdcl"]
    distill = repo_params().distill
    sections = [f.name for f in fields(DistillConfig)][2:]
    assert sections == list(TERM_NAMES)
    assert [type(getattr(distill, t.name)) for t in TERMS] == [t.options for t in TERMS]
    assert list(distill.weights) == list(TERM_NAMES)
    assert ("sup", *TERM_NAMES, "total") == CURVE_TERMS
    assert DIRECTION_SHARES == (
        "rbsd_cnn_teaches",
        "rbsd_vit_teaches",
        "pbsd_cnn_teaches",
        "pbsd_vit_teaches",
    )


def test_the_switches_under_train_are_the_proposed_methods_terms():
    switch_fields = [f.name for f in fields(TrainConfig)][1:4]
    assert switch_fields == list(SWITCHABLE_TERMS) == list(METHODS["ours"])
    train = repo_params({"train.method": "ours", "train.rbsd": False}).train
    assert active_terms(train.method, train.switches()) == ("hfd", "pbsd")


def test_a_term_factory_receives_its_own_section_only(monkeypatch):
    received = []
    monkeypatch.setitem(registry._FACTORIES, "rbsd", lambda options, ch: received.append(options))
    distill = repo_params({"distill.rbsd.window": 3}).distill
    build_term("rbsd", distill, CHANNELS)
    assert received == [distill.rbsd] and received[0].window == 3


def test_undeclared_names_are_refused_where_they_enter():
    with pytest.raises(ValueError, match="'fitnet' is not a declared term"):
        registry.register_term("fitnet")
    with pytest.raises(ValueError, match="method presets name undeclared terms: fitnet"):
        check_presets({**METHODS, "fitnets": ("fitnet",)}, TERM_NAMES)
    weights = {name: 1.0 for name in TERM_NAMES}
    for bad, message in (
        ({"distill": {"weights": {**weights, "fitnet": 1.0}}}, "weights.fitnet: not a dist"),
        ({"train": {"method": "fitnets"}}, "train.method: 'fitnets' is not one of independent, "),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_params(over_repo(bad), "params.yaml")


def test_a_term_without_its_weight_or_its_section_is_named():
    raw = repo_params_mapping()
    del raw["distill"]["weights"]["kdcl"]
    with pytest.raises(ConfigError, match=r"distill\.weights\.kdcl: missing \(one weight per"):
        parse_params(raw, "params.yaml")
    raw = repo_params_mapping()
    del raw["distill"]["pbsd"]
    with pytest.raises(ConfigError, match=r"missing key distill\.pbsd$"):
        parse_params(raw, "params.yaml")
