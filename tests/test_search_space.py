"""One meaning for "these parameters" in the API, the CLI and the panel (README: Python API)."""

from __future__ import annotations

import pytest

from merlin_kit._cli_args import optimization_config
from merlin_kit.cli import build_parser
from merlin_kit.errors import ConfigError
from merlin_kit.optimize import OptimizationConfig
from merlin_kit.optimize.config import build_search_space
from merlin_kit.strategies import get_strategy

S01 = get_strategy("s01_trailing_ma")
DEFAULT_SET = [p.name for p in S01.params if p.optimize]
RANGES = {"maLength": {"min": 50, "max": 400, "step": 25}, "maType": {"choices": ["SMA", "EMA", "HMA"]}}


def names(opt: OptimizationConfig) -> list[str]:
    return [d.name for d in build_search_space(S01, opt)]


def test_nothing_named_searches_the_default_set():
    assert names(OptimizationConfig()) == DEFAULT_SET and len(DEFAULT_SET) == 17


def test_ranges_alone_search_exactly_those_parameters():
    """The README's example: two ranges mean two parameters, not 17 (the defaults keep their values)."""
    dims = build_search_space(S01, OptimizationConfig(param_ranges=RANGES))
    assert [d.name for d in dims] == ["maType", "maLength"]
    assert dims[0].choices == ("SMA", "EMA", "HMA") and (dims[1].low, dims[1].high, dims[1].step) == (50, 400, 25)


def test_extend_defaults_adds_the_ranges_to_the_default_set():
    extra = {"stopLongRR": {"min": 2.0, "max": 3.0, "step": 0.5}}  # not in the default set
    got = names(OptimizationConfig(param_ranges={**RANGES, **extra}, extend_defaults=True))
    assert set(got) == set(DEFAULT_SET) | {"stopLongRR"} and len(got) == 18


def test_optimize_params_wins_and_takes_ranges_for_its_names():
    got = build_search_space(S01, OptimizationConfig(optimize_params=["maLength", "closeCountLong"], param_ranges=RANGES))
    assert [d.name for d in got] == ["maLength", "closeCountLong"] and got[0].high == 400


def test_a_range_on_a_fixed_parameter_is_a_contradiction():
    with pytest.raises(ConfigError, match=r"'maLength' are both optimised and fixed") as info:
        build_search_space(S01, OptimizationConfig(param_ranges=RANGES, fixed_params={"maLength": 100}))
    assert (info.value.field, info.value.param) == ("param_ranges", "maLength")
    # with the default set, a fixed value simply takes that parameter out of the search
    assert "maLength" not in names(OptimizationConfig(fixed_params={"maLength": 100}))


def test_extend_defaults_must_be_a_bool():
    with pytest.raises(ConfigError, match="extend_defaults must be True or False"):
        build_search_space(S01, OptimizationConfig(param_ranges=RANGES, extend_defaults="yes"))


def test_cli_params_and_api_ranges_give_the_same_search():
    args = build_parser().parse_args(["optimize", "--params", "maLength=50:400:25", "maType=SMA,EMA,HMA"])
    cli_dims = build_search_space(S01, optimization_config(args))
    api_dims = build_search_space(S01, OptimizationConfig(param_ranges=RANGES))
    assert sorted(cli_dims, key=lambda d: d.name) == sorted(api_dims, key=lambda d: d.name)


def test_panel_shows_what_the_config_searches():
    pytest.importorskip("ipywidgets")
    from merlin_kit.notebook import ConfigPanel

    panel = ConfigPanel.from_config(OptimizationConfig(param_ranges=RANGES))
    ticked = sorted(n for n, row in panel.param_rows.items() if row.optimize.value)
    assert ticked == ["maLength", "maType"]
    opt, _ = panel.config()
    assert names(opt) == ["maType", "maLength"]
