"""The composite score (``merlin_kit.scoring``) rule by rule: configuration checks, weights, bounds,
inversion, missing and non-finite metrics, percentile ranks, post-hoc scoring and the minimum score."""

from __future__ import annotations

import math

import pytest

from merlin_kit.errors import ConfigError
from merlin_kit.scoring import (
    DEFAULT_BOUNDS,
    DEFAULT_WEIGHTS,
    MISSING_SCORE,
    ScoreConfig,
    minmax_score,
    passes_min_score,
    percentile_scores,
    score_all,
)


def test_defaults_weights_sum_to_one_and_missing_scores_fifty():
    assert math.isclose(sum(DEFAULT_WEIGHTS.values()), 1.0)
    assert MISSING_SCORE == 50.0
    assert minmax_score({}) == 50.0  # every metric missing
    assert ScoreConfig().active_weights() == [(k, DEFAULT_WEIGHTS[k]) for k in
                                              ("romad", "sharpe", "pf", "ulcer", "sqn", "consistency")]


@pytest.mark.parametrize("kwargs, says", [
    (dict(weights={"nope": 0.5}), "score.weights: unknown metric 'nope'"),
    (dict(weights={"romad": 1.5}), r"score.weights\['romad'\] must be a number in \[0, 1\], got 1.5"),
    (dict(weights={"romad": -0.1}), r"must be a number in \[0, 1\]"),
    (dict(weights={"romad": True}), r"must be a number in \[0, 1\]"),
    (dict(weights={"romad": "1"}), r"must be a number in \[0, 1\]"),
    (dict(enabled=("romad", "nope")), "score.enabled: unknown metric 'nope'"),
    (dict(invert={"nope"}), "score.invert: unknown metric 'nope'"),
    (dict(bounds={"nope": (0, 1)}), "score.bounds: unknown metric 'nope'"),
    (dict(bounds={"romad": (2.0, 2.0)}), r"score.bounds\['romad'\]: max must be greater than min"),
    (dict(bounds={"romad": (3.0, 2.0)}), "max must be greater than min"),
    (dict(normalization="zscore"), "normalization must be one of minmax, percentile"),
    (dict(weights={"romad": 0.0}), "at least one enabled metric needs a weight > 0"),
    (dict(weights={"romad": 1.0}, enabled=("sharpe",)), "at least one enabled metric needs a weight > 0"),
])
def test_bad_configurations_are_refused(kwargs, says):
    with pytest.raises(ConfigError, match=says) as info:
        ScoreConfig(**kwargs)
    assert info.value.field == "score"


def test_edge_values_that_are_allowed():
    ScoreConfig(weights={"romad": 1.0, "sharpe": 0.0})  # 0 and 1 are in [0, 1]
    ScoreConfig(weights={"romad": 1})  # an int weight
    cfg = ScoreConfig(weights={"romad": 1.0}, bounds={"romad": (-1.0, -0.5)})
    assert cfg.bounds["romad"] == (-1.0, -0.5) and cfg.bounds["sharpe"] == DEFAULT_BOUNDS["sharpe"]


def test_active_weights_follow_enabled_and_drop_zero_weights():
    cfg = ScoreConfig(weights={"romad": 0.5, "sharpe": 0.0, "pf": 0.25}, enabled=("pf", "romad", "sharpe"))
    assert cfg.active_weights() == [("romad", 0.5), ("pf", 0.25)]  # fixed order, zero weight left out
    assert ScoreConfig(weights={"romad": 0.5, "pf": 0.25}, enabled=("pf",)).active_weights() == [("pf", 0.25)]


def test_to_dict_from_dict_round_trip_and_unknown_fields():
    cfg = ScoreConfig(weights={"romad": 0.5, "pf": 0.5}, enabled=("romad", "pf"), invert={"pf"},
                      bounds={"romad": (1.0, 4.0)}, normalization="percentile", min_score=40.0)
    d = cfg.to_dict()
    assert d["enabled"] == ["romad", "pf"] and d["invert"] == ["pf"] and d["bounds"]["romad"] == [1.0, 4.0]
    assert d["normalization"] == "percentile" and d["min_score"] == 40.0
    again = ScoreConfig.from_dict(d)
    assert again == cfg and again.to_dict() == d
    assert ScoreConfig().to_dict()["enabled"] is None
    assert ScoreConfig.from_dict(None) == ScoreConfig() == ScoreConfig.from_dict({})
    with pytest.raises(ConfigError, match="unknown field"):
        ScoreConfig.from_dict({"weights": {"romad": 1.0}, "colour": "red"})
    assert cfg.with_normalization("minmax").normalization == "minmax"


def test_minmax_normalisation_bounds_clamping_and_inversion():
    one = ScoreConfig(weights={"romad": 1.0}, bounds={"romad": (2.0, 6.0)})
    assert minmax_score({"romad": 3.0}, one) == pytest.approx(25.0)
    assert minmax_score({"romad": 2.0}, one) == 0.0 and minmax_score({"romad": 6.0}, one) == 100.0
    assert minmax_score({"romad": 1.0}, one) == 0.0 and minmax_score({"romad": 9.0}, one) == 100.0
    inverted = ScoreConfig(weights={"romad": 1.0}, bounds={"romad": (2.0, 6.0)}, invert={"romad"})
    assert minmax_score({"romad": 3.0}, inverted) == pytest.approx(75.0)
    # ulcer is inverted by default: a low ulcer index is good
    ulcer = ScoreConfig(weights={"ulcer": 1.0})
    assert minmax_score({"ulcer_index": 5.0}, ulcer) == pytest.approx(75.0)


def test_weights_are_normalised_by_their_sum():
    cfg = ScoreConfig(weights={"romad": 0.2, "sharpe": 0.6})
    m = {"romad": 10.0, "sharpe_ratio": -1.0}  # 100 and 0
    assert minmax_score(m, cfg) == pytest.approx(0.2 * 100 / 0.8)
    assert minmax_score({"romad": 10.0}, cfg) == pytest.approx((0.2 * 100 + 0.6 * 50) / 0.8)  # sharpe missing


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf"), float("-inf")])
def test_missing_or_non_finite_metric_scores_fifty(bad):
    cfg = ScoreConfig(weights={"romad": 1.0})
    assert minmax_score({"romad": bad}, cfg) == MISSING_SCORE
    assert percentile_scores([{"romad": bad}, {"romad": 1.0}], cfg.with_normalization("percentile"))[0] == MISSING_SCORE


def test_percentile_ranks_ties_and_inversion():
    cfg = ScoreConfig(weights={"romad": 1.0}, normalization="percentile")
    rows = [{"romad": v} for v in (3.0, 1.0, 2.0, 2.0)]
    # rank = how many values are strictly below, over all values
    assert percentile_scores(rows, cfg) == [75.0, 0.0, 25.0, 25.0]
    inv = ScoreConfig(weights={"romad": 1.0}, normalization="percentile", invert={"romad"})
    assert percentile_scores(rows, inv) == [25.0, 100.0, 75.0, 75.0]
    two = ScoreConfig(weights={"romad": 0.5, "sharpe": 0.25}, normalization="percentile")
    rows2 = [{"romad": 1.0, "sharpe_ratio": 2.0}, {"romad": 2.0, "sharpe_ratio": 1.0}]
    assert percentile_scores(rows2, two) == [pytest.approx(0.25 * 50 / 0.75), pytest.approx(0.5 * 50 / 0.75)]
    assert percentile_scores([], cfg) == []


def test_score_all_uses_the_configured_normalisation():
    rows = [{"romad": v} for v in (1.0, 5.0)]
    mm = ScoreConfig(weights={"romad": 1.0})
    assert score_all(rows, mm) == [minmax_score(r, mm) for r in rows] == [10.0, 50.0]
    assert score_all(rows, mm.with_normalization("percentile")) == [0.0, 50.0]
    assert score_all([{"romad": 5.0}]) == [minmax_score({"romad": 5.0})]


def test_passes_min_score_keeps_the_boundary():
    assert passes_min_score([10.0, 40.0, 40.1, 39.9], ScoreConfig(min_score=40.0)) == [False, True, True, False]
    assert passes_min_score([0.0, 100.0], ScoreConfig()) == [True, True]


def test_default_bounds_are_the_specs():
    """specs/METRICS_AND_INDICATORS.md: romad 0-10, sharpe -1-3, pf 0-5, ulcer 0-20, sqn -2-7, consistency 0-100."""
    assert DEFAULT_BOUNDS == {"romad": (0.0, 10.0), "sharpe": (-1.0, 3.0), "pf": (0.0, 5.0), "ulcer": (0.0, 20.0),
                              "sqn": (-2.0, 7.0), "consistency": (0.0, 100.0)}
    # and they are what a score uses: each metric at its upper bound scores 100 (ulcer, inverted, 0)
    at_hi = {"romad": 10.0, "sharpe_ratio": 3.0, "profit_factor": 5.0, "ulcer_index": 20.0, "sqn": 7.0,
             "consistency_score": 100.0}
    for key, metric in (("romad", "romad"), ("sharpe", "sharpe_ratio"), ("pf", "profit_factor"), ("sqn", "sqn"),
                        ("consistency", "consistency_score")):
        lo, hi = DEFAULT_BOUNDS[key]
        cfg = ScoreConfig(weights={key: 1.0})
        assert minmax_score({metric: hi}, cfg) == 100.0 and minmax_score({metric: lo}, cfg) == 0.0
        assert minmax_score({metric: (lo + hi) / 2}, cfg) == pytest.approx(50.0)
    assert minmax_score(at_hi, ScoreConfig(weights={"ulcer": 1.0})) == 0.0


def test_from_dict_with_some_fields_only():
    assert ScoreConfig.from_dict({"weights": {"romad": 1.0}}) == ScoreConfig(weights={"romad": 1.0})
    assert ScoreConfig.from_dict({"invert": ["romad"]}).invert == frozenset({"romad"})
    assert ScoreConfig.from_dict({"bounds": {"romad": [1, 2]}}).bounds["romad"] == (1, 2)


def test_an_enabled_metric_without_a_weight_has_none():
    cfg = ScoreConfig(weights={"romad": 0.5}, enabled=("romad", "sharpe"))
    assert cfg.active_weights() == [("romad", 0.5)]
    assert minmax_score({"romad": 10.0, "sharpe_ratio": -1.0}, cfg) == 100.0  # sharpe has no weight
    with pytest.raises(ConfigError, match="weight > 0"):
        ScoreConfig(weights={"romad": 0.5}, enabled=("sharpe",))
