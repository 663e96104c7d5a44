"""Optimisation configuration, validated completely before any process starts.

Two objects, named after the reference system: :class:`OptimizationConfig`
(what to optimise: data, strategy, parameter ranges, window, workers, score)
and :class:`OptunaConfig` (how: target, budget, sampler, pruner, storage).
Both serialise to plain JSON so that the study itself carries the run's
configuration and a worker needs nothing but the storage and study name.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import os
import tempfile
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, Mapping, Sequence

import pandas as pd

from .._platform import forkserver_path_fits, is_macos
from ..data import PreparedData
from ..errors import ConfigError, ParameterError, StrategyError
from ..metrics import LOWER_IS_BETTER, METRIC_NAMES
from ..scoring import ScoreConfig
from ..strategies import Strategy, get_strategy
from ._samplers import check_sampler
from ._start import resolve_start_method

MAX_WORKERS = 32
BUDGET_MODES = ("trials", "time", "convergence")
SAMPLERS = ("tpe", "random", "cmaes", "nsga2", "nsga3", "qmc", "gp", "grid")
#: samplers whose points are known in advance: evaluated by the sweep path (:mod:`._sweep`), no ask/tell
SWEEP_SAMPLERS = ("grid", "random", "qmc")
#: a trial is one backtest that reports one value, so a pruner compares that value with earlier trials' values
PRUNERS = ("none", "median", "percentile")
#: pruners that need several intermediate values per trial (steps), with why they are not offered
UNSUPPORTED_PRUNERS = {
    "patient": "each trial is one backtest that reports one value, so there are no steps to be patient over "
               "(optuna's PatientPruner would never prune)",
}
#: ``auto`` (the default): forkserver where the platform has it, spawn on Windows (:mod:`._start`)
START_METHODS = ("auto", "spawn", "forkserver", "fork")
#: default limit of the test backtest run before workers start (OptimizationConfig.max_backtest_seconds)
DEFAULT_MAX_BACKTEST_SECONDS = 30.0
#: target aliases of the reference system -> metric name (``score`` is the composite score)
TARGET_ALIASES: dict[str, str] = {
    "score": "score",
    "net_profit": "net_profit_pct",
    "romad": "romad",
    "sharpe": "sharpe_ratio",
    "max_drawdown": "max_drawdown_pct",
    "profit_factor": "profit_factor",
    "sortino": "sortino_ratio",
    "ulcer": "ulcer_index",
    "sqn": "sqn",
    "win_rate": "win_rate",
    "consistency": "consistency_score",
}


@dataclass(frozen=True)
class ParamRange:
    """A user override of one parameter's search range: min/max/step for numbers, choices otherwise."""

    min: float | None = None
    max: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] | None = None

    @classmethod
    def coerce(cls, name: str, value: Any) -> "ParamRange":
        if isinstance(value, ParamRange):
            return value
        if isinstance(value, Mapping):
            unknown = set(value) - {"min", "max", "step", "choices"}
            if unknown:
                raise _range_error(name, f"unknown key(s) {', '.join(sorted(unknown))}; allowed: min, max, step, choices")
            choices = value.get("choices")
            return cls(value.get("min"), value.get("max"), value.get("step"), None if choices is None else tuple(choices))
        if isinstance(value, (list, tuple)):
            return cls(choices=tuple(value))
        raise _range_error(name, f"must be a dict with min/max/step or choices, got {value!r}", sep=" ")

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class SearchDim:
    """One optimised parameter, resolved against the strategy schema."""

    name: str
    kind: str  # int | float | categorical
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] | None = None


@dataclass
class OptimizationConfig:
    """What to optimise.

    ``data``: CSV path, bytes, file object, DataFrame or ``"sample"``.
    ``param_ranges``: per-parameter ranges
    ``{"maLength": {"min": 50, "max": 300, "step": 25}, "maType": {"choices": ["SMA", "EMA"]}}``.
    Which parameters are optimised (one meaning in the API, the CLI's
    ``--params`` and the panel): ``optimize_params`` when given (a name
    without a range uses its default range); else exactly the names in
    ``param_ranges``; else the strategy's default set (``merlin-kit params
    STRATEGY`` lists it).  ``extend_defaults=True`` optimises the default set
    *plus* the names in ``param_ranges`` (the others keep their defaults).
    ``fixed_params``: values of parameters that are not optimised.
    ``start_method``: how worker processes start; ``auto`` (default) is
    forkserver on Linux/macOS and spawn on Windows (:mod:`._start`).
    ``min_profit``: trials whose net profit (%) is below it are PRUNED.
    ``max_backtest_seconds``: the strategy's test backtest (one run in the
    calling process with the defaults and ``fixed_params``, before any worker
    starts) must take at most this long, or the run fails at once with a
    StrategyError; ``None`` turns the check off.
    """

    data: Any = "sample"
    strategy: Any = "s01_trailing_ma"
    optimize_params: Sequence[str] | None = None
    param_ranges: Mapping[str, Any] = field(default_factory=dict)
    fixed_params: Mapping[str, Any] = field(default_factory=dict)
    start: Any = None
    end: Any = None
    warmup_bars: int = 1000
    worker_processes: int = 1
    score: ScoreConfig | Mapping[str, Any] | None = None
    min_profit: float | None = None
    start_method: str = "auto"
    max_backtest_seconds: float | None = DEFAULT_MAX_BACKTEST_SECONDS
    extend_defaults: bool = False

    def score_config(self) -> ScoreConfig:
        if isinstance(self.score, ScoreConfig):
            return self.score
        return ScoreConfig.from_dict(self.score)


@dataclass
class OptunaConfig:
    """How to optimise: target(s), constraints, global budget, sampler, pruner, storage.

    ``objectives``: 2 to 6 ``(metric, "maximize" | "minimize")`` pairs (or ``"metric:max"``
    strings) make a multi-objective run; its answer is the Pareto front, and ``run.best``
    is the front's best trial by the *first* objective.  ``constraints``: ``"metric OP
    number"`` strings (OP: ``>=``, ``<=``, ``>``, ``<``) on any metric, for one objective or
    several: the sampler avoids violating trials, the results list feasible trials first.
    ``hv_reference``: the hypervolume reference point of a multi-objective convergence
    budget, one value per objective in its own units (default: fixed from the first 10
    feasible trials' worst values).
    """

    target: str = "score"
    objectives: Sequence[Any] | None = None
    constraints: Sequence[str] = ()
    hv_reference: Sequence[float] | None = None
    budget_mode: str = "trials"
    n_trials: int | None = 100
    time_limit: float | None = None
    convergence_patience: int | None = None
    sampler: str = "tpe"
    #: options of the sampler, e.g. {"popsize": 20} for cmaes (allowed ones: merlin_kit.optimize.SAMPLER_OPTIONS)
    sampler_options: Mapping[str, Any] = field(default_factory=dict)
    #: random trials before tpe, gp and cmaes start modelling
    n_startup_trials: int = 10
    pruner: str = "none"
    pruner_warmup_trials: int = 10
    seed: int | None = None
    study_name: str | None = None
    storage: str | None = None
    save_study: bool = False
    #: run folder for results.csv / summary.json (and the journal when save_study);
    #: None with save_study: ./merlin_runs/<study_name>
    output_dir: str | os.PathLike | None = None
    #: random/qmc: draw the points in advance and write each trial as one record (:mod:`._sweep`);
    #: ``sampler="grid"`` always sweeps
    sweep: bool = False
    #: points per sweep batch (claimed, evaluated and written together); None: ~0.2 s of backtests
    sweep_batch: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["output_dir"] = None if self.output_dir is None else os.fspath(self.output_dir)
        d["sampler_options"] = dict(self.sampler_options or {})
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "OptunaConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

def check_objectives(cfg: OptunaConfig, min_profit: float | None) -> dict[str, Any]:
    """``objectives``, ``constraints`` and ``hv_reference`` checked; their normalised JSON-ready form.

    A multi-objective study cannot prune (Optuna has no intermediate values for several
    objectives), so ``pruner`` and ``min_profit`` are refused there: ``min_profit`` is the
    constraint ``"net_profit_pct >= X"``.
    """
    from ._constraints import parse_constraints
    from ._objectives import parse_objectives

    constraints = [c.text for c in parse_constraints(cfg.constraints)]
    out: dict[str, Any] = {"constraints": constraints} if constraints else {}
    if cfg.objectives is None:
        if cfg.hv_reference is not None:
            raise ConfigError("hv_reference needs objectives (two or more)", field="hv_reference")
        return out
    objectives = parse_objectives(cfg.objectives)
    out["objectives"] = [[o.name, o.direction] for o in objectives]
    if cfg.target != "score" and target_metric(cfg.target) != objectives[0].metric:
        raise ConfigError(f"target {cfg.target!r} and objectives are both given; the first objective "
                          f"({objectives[0].name!r}) is the primary one: leave target out, or list it first",
                          field="objectives")
    if len(objectives) > 1:
        if cfg.pruner != "none":
            raise ConfigError(f"pruner {cfg.pruner!r}: a multi-objective study cannot prune (Optuna has no "
                              "intermediate values for several objectives); use pruner='none' and constraints",
                              field="pruner")
        if min_profit is not None:
            raise ConfigError(f"min_profit cannot prune a multi-objective run; use the constraint "
                              f"'net_profit_pct >= {min_profit}' instead", field="min_profit")
    if cfg.hv_reference is not None:
        ref = cfg.hv_reference
        if not isinstance(ref, (list, tuple)) or len(ref) != len(objectives) or not all(_is_number(x) for x in ref):
            raise ConfigError(f"hv_reference must be {len(objectives)} finite numbers (one per objective), "
                              f"got {ref!r}", field="hv_reference")
        out["hv_reference"] = [float(x) for x in ref]
    return out


def target_metric(target: str) -> str:
    """Metric name behind a target (``score`` for the composite score)."""
    return TARGET_ALIASES.get(target, target)


def target_direction(target: str) -> Literal["maximize", "minimize"]:
    return "minimize" if target_metric(target) in LOWER_IS_BETTER else "maximize"


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


def _positive_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; ``name`` is the config attribute (the error's field)."""
    if isinstance(value, bool) or not isinstance(value, int) and not (isinstance(value, float) and value.is_integer()):
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}", field=name)
    if value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}", field=name)
    return int(value)


def _prefixed(field_name: str, reason: str, *, param: str | None = None) -> ConfigError:
    """``<field>: <reason>``, with ``reason`` kept apart for showing beside the field."""
    return ConfigError(f"{field_name}: {reason}", field=field_name, param=param, reason=reason)


def _range_error(name: str, reason: str, *, sep: str = ": ") -> ConfigError:
    """An error in ``param_ranges[name]``: the message names it, ``reason`` goes beside the parameter's row."""
    return ConfigError(f"param_ranges[{name!r}]{sep}{reason}", field="param_ranges", param=name, reason=reason)


def validate_data_source(data: Any) -> None:
    """Reject source types the loader cannot read before anything starts."""
    ok = isinstance(data, (str, os.PathLike, bytes, bytearray, pd.DataFrame, PreparedData, io.IOBase)) or hasattr(data, "read")
    if not ok:
        raise _prefixed("data", "expected a CSV path, bytes, a file object, a DataFrame or 'sample', "
                                f"got {type(data).__name__}")


def optimized_names(strategy: Strategy, config: OptimizationConfig) -> list[str]:
    """The names a config optimises, in schema order (fixed ones not yet removed; see OptimizationConfig)."""
    ranges = set(dict(config.param_ranges or {}))
    if config.optimize_params is not None:
        wanted = set(config.optimize_params)
    elif ranges and not config.extend_defaults:
        wanted = ranges
    else:
        wanted = {p.name for p in strategy.params if p.optimize} | ranges
    return [p.name for p in strategy.params if p.name in wanted]


def build_search_space(strategy: Strategy, config: OptimizationConfig) -> list[SearchDim]:
    """Resolve which parameters are optimised and over what range; every mistake is a ConfigError."""
    names = strategy.param_names()
    valid = ", ".join(names)
    ranges = {}
    for name, value in dict(config.param_ranges or {}).items():
        if name not in names:
            raise _prefixed("param_ranges", f"unknown parameter {name!r} for {strategy.id}; valid: {valid}", param=name)
        ranges[name] = ParamRange.coerce(name, value)
    fixed = dict(config.fixed_params or {})
    for name, value in fixed.items():
        if name not in names:
            raise _prefixed("fixed_params", f"unknown parameter {name!r} for {strategy.id}; valid: {valid}", param=name)
        try:
            strategy.param(name).validate(value)
        except ParameterError as exc:
            raise _prefixed("fixed_params", str(exc), param=name) from None
    if config.optimize_params is not None and isinstance(config.optimize_params, str):
        raise ConfigError("optimize_params must be a list of parameter names, not a string", field="optimize_params")
    if not isinstance(config.extend_defaults, bool):
        raise ConfigError(f"extend_defaults must be True or False, got {config.extend_defaults!r}",
                          field="extend_defaults")
    if config.optimize_params is not None:
        unknown = [n for n in config.optimize_params if n not in names]
        if unknown:
            raise _prefixed("optimize_params", f"unknown parameter(s) {', '.join(map(repr, unknown))} for {strategy.id}; valid: {valid}")
    chosen = optimized_names(strategy, config)
    explicit = config.optimize_params is not None or (bool(ranges) and not config.extend_defaults)
    both = [n for n in chosen if n in fixed]
    if both and explicit:
        source = "optimize_params" if config.optimize_params is not None else "param_ranges"
        raise ConfigError(f"parameter(s) {', '.join(map(repr, both))} are both optimised and fixed; choose one",
                          field=source, param=both[0] if len(both) == 1 else None)
    selected = [n for n in chosen if n not in fixed]
    if not selected:
        raise ConfigError(f"no parameter is optimised; choose some of: {valid}", field="optimize_params")

    dims = []
    for name in selected:
        p = strategy.param(name)
        r = ranges.get(name, ParamRange())
        if p.kind in ("choice", "bool"):
            if r.min is not None or r.max is not None or r.step is not None:
                raise _range_error(name, f"a {p.kind} parameter takes choices, not min/max/step; allowed: {p.describe_allowed()}")
            choices = r.choices if r.choices is not None else p.choices
            if not choices:
                raise _range_error(name, f"choices must not be empty; allowed: {p.describe_allowed()}")
            try:
                resolved = tuple(dict.fromkeys(p.validate(c) for c in choices))
            except ParameterError as exc:
                raise _range_error(name, str(exc)) from None
            dims.append(SearchDim(name, "categorical", choices=resolved))
            continue
        if r.choices is not None:
            raise _range_error(name, "a numeric parameter takes min/max/step, not choices")
        low = r.min if r.min is not None else (p.opt_low if p.opt_low is not None else p.low)
        high = r.max if r.max is not None else (p.opt_high if p.opt_high is not None else p.high)
        step = r.step if r.step is not None else p.opt_step
        for label, v in (("min", low), ("max", high)):
            if v is None or not _is_number(v):
                raise _range_error(name, f"{label} must be a finite number, got {v!r}", sep=".")
        if low > high:
            raise _range_error(name, f"min ({low}) > max ({high})")
        if step is not None and (not _is_number(step) or step <= 0):
            raise _range_error(name, f"step must be > 0, got {step!r}", sep=".")
        for label, v in (("min", low), ("max", high)):
            try:
                p.validate(v)
            except ParameterError:
                raise _range_error(name, f"{label} = {v} is outside the parameter's limits: {p.describe_allowed()}",
                                   sep=".") from None
        if p.kind == "int":
            for label, v in (("min", low), ("max", high), ("step", step)):
                if v is not None and float(v) != int(v):
                    raise _range_error(name, f"{label} must be an integer for an int parameter, got {v!r}", sep=".")
            dims.append(SearchDim(name, "int", int(low), int(high), int(step) if step is not None else 1))
        else:
            dims.append(SearchDim(name, "float", float(low), float(high), float(step) if step is not None else None))
    return dims


def is_sweep(cfg: OptunaConfig) -> bool:
    """Whether a run evaluates precomputed points (:mod:`._sweep`) instead of asking a sampler."""
    return cfg.sampler == "grid" or (cfg.sweep is True and cfg.sampler in SWEEP_SAMPLERS)


def grid_size(dims: Sequence[SearchDim]) -> int:
    """Points of the stepped space (every combination); a float without a step has no grid."""
    size = 1
    for d in dims:
        size *= len(d.choices or ()) if d.kind == "categorical" else stepped_count(d)
    return size


def stepped_count(d: SearchDim) -> int:
    """How many values ``low, low + step, ...`` a numeric dimension has (Optuna drops a partial last step)."""
    if d.step is None:
        raise _range_error(d.name, "a grid needs a step for every float parameter; give param_ranges "
                                   f"[{d.name!r}] a step", sep=": ")
    return int(math.floor((float(d.high) - float(d.low)) / float(d.step) + 1e-9)) + 1


def check_sweep(cfg: OptunaConfig, dims: Sequence[SearchDim]) -> dict[str, Any]:
    """A sweep's own rules; returns the normalised fields (a grid's budget is its size unless smaller)."""
    if cfg.sampler not in SWEEP_SAMPLERS:
        raise ConfigError(f"sweep=True needs a sampler whose points are known in advance "
                          f"({', '.join(SWEEP_SAMPLERS)}); {cfg.sampler!r} adapts to results, so it asks "
                          "and tells: set sweep=False", field="sweep")
    if cfg.budget_mode == "convergence":
        raise ConfigError("a sweep's points are fixed in advance, so 'no improvement for N trials' does not end it "
                          "any sooner than a trials budget would; use budget_mode 'trials' (or 'time' for a grid)",
                          field="budget_mode")
    if cfg.budget_mode == "time" and cfg.sampler != "grid":
        raise ConfigError(f"a {cfg.sampler} sweep draws n_trials points in advance: use budget_mode 'trials' "
                          "(or sweep=False for a time budget)", field="budget_mode")
    if cfg.pruner != "none":
        raise ConfigError("a sweep evaluates every point in full (a pruner compares with trials that may not "
                          "exist yet): use pruner 'none'", field="pruner")
    if cfg.sweep_batch is not None:
        _positive_int(cfg.sweep_batch, "sweep_batch")
    if cfg.objectives is not None and len(cfg.objectives) > 1 or cfg.constraints:
        raise ConfigError("a sweep evaluates one objective without constraints; for several objectives or "
                          "constraints use sweep=False (sampler random, qmc, tpe or nsga2)", field="sweep")
    if cfg.sampler_options:
        raise ConfigError(f"sampler_options do not apply to a sweep (its points are drawn by the kit); "
                          f"got {dict(cfg.sampler_options)!r}", field="sampler_options")
    if cfg.sampler == "qmc":
        try:
            import scipy.stats.qmc  # noqa: F401
        except ImportError:
            raise ConfigError("sampler 'qmc' needs scipy (pip install scipy)", field="sampler") from None
    if cfg.sampler != "grid":
        return {}
    size = grid_size(dims)
    return {"n_trials": size if cfg.budget_mode != "trials" or cfg.n_trials is None else min(int(cfg.n_trials), size)}


@dataclass(frozen=True)
class ValidatedConfig:
    """What :func:`validate` resolved: normalised copies of both configs, the strategy, search space and score.

    The copies (not the caller's objects) are what a run uses, so validating a
    config never changes it (a notebook may validate the same objects many times).
    """

    opt: OptimizationConfig
    config: OptunaConfig
    strategy: Strategy
    space: list[SearchDim]
    score: ScoreConfig


def validate(opt: OptimizationConfig, optuna_cfg: OptunaConfig) -> ValidatedConfig:
    """Check every field of both configs (leaving them unchanged); return what a run needs, normalised."""
    validate_data_source(opt.data)
    try:
        strategy = get_strategy(opt.strategy)
    except StrategyError as exc:
        raise _prefixed("strategy", str(exc)) from None
    dims = build_search_space(strategy, opt)
    score = opt.score_config()
    if isinstance(opt.warmup_bars, bool) or not isinstance(opt.warmup_bars, int) or opt.warmup_bars < 0:
        raise ConfigError(f"warmup_bars must be an integer >= 0, got {opt.warmup_bars!r}", field="warmup_bars")
    workers = opt.worker_processes
    if isinstance(workers, bool) or not isinstance(workers, int) or not (0 <= workers <= MAX_WORKERS):
        raise ConfigError(f"worker_processes must be an integer from 1 to {MAX_WORKERS}, got {workers!r}",
                          field="worker_processes")
    if workers == 0 and optuna_cfg.storage is None:
        raise ConfigError(
            f"worker_processes must be an integer from 1 to {MAX_WORKERS}; 0 (only remote "
            "'merlin-kit worker' processes) needs an explicit storage they can reach",
            field="worker_processes",
        )
    if opt.start_method not in START_METHODS:
        raise ConfigError(f"start_method must be one of {', '.join(START_METHODS)}, got {opt.start_method!r}",
                          field="start_method")
    start_method = resolve_start_method(opt.start_method)
    if start_method == "fork" and is_macos():
        raise ConfigError("start_method 'fork' is unsafe on macOS (system frameworks crash in a forked child, "
                          "which is why Python's default there is spawn); use spawn or forkserver",
                          field="start_method")
    if start_method == "forkserver" and is_macos() and not forkserver_path_fits():
        raise ConfigError(f"start_method 'forkserver': the temp folder {tempfile.gettempdir()!r} is too long for the "
                          "server's socket path on macOS (104 bytes); set TMPDIR=/tmp or use spawn",
                          field="start_method")
    if start_method not in multiprocessing.get_all_start_methods():
        raise ConfigError(
            f"start_method {start_method!r} is not available on this platform; available: {', '.join(multiprocessing.get_all_start_methods())}",
            field="start_method",
        )
    if opt.max_backtest_seconds is not None and (not _is_number(opt.max_backtest_seconds) or opt.max_backtest_seconds <= 0):
        raise ConfigError(
            f"max_backtest_seconds must be a number of seconds > 0, or None for no limit; got {opt.max_backtest_seconds!r}",
            field="max_backtest_seconds",
        )
    if opt.min_profit is not None and not _is_number(opt.min_profit):
        raise ConfigError(f"min_profit must be a number (net profit in %) or None, got {opt.min_profit!r}",
                          field="min_profit")

    cfg = optuna_cfg
    normalised: dict[str, Any] = {}  # OptunaConfig fields whose copy gets a cleaned value
    metric = target_metric(cfg.target)
    if metric != "score" and metric not in METRIC_NAMES:
        raise ConfigError(
            f"target {cfg.target!r} is unknown; allowed: {', '.join(TARGET_ALIASES)} or a metric name: {', '.join(METRIC_NAMES)}",
            field="target",
        )
    normalised.update(check_objectives(cfg, opt.min_profit))
    if cfg.budget_mode not in BUDGET_MODES:
        raise ConfigError(f"budget_mode must be one of {', '.join(BUDGET_MODES)}, got {cfg.budget_mode!r}",
                          field="budget_mode")
    if cfg.budget_mode == "trials":
        if cfg.n_trials is None:
            raise ConfigError("n_trials is required when budget_mode is 'trials'", field="n_trials")
        normalised["n_trials"] = _positive_int(cfg.n_trials, "n_trials")
    elif cfg.budget_mode == "time":
        if cfg.time_limit is None:
            raise ConfigError("time_limit (seconds) is required when budget_mode is 'time'", field="time_limit")
        if not _is_number(cfg.time_limit) or cfg.time_limit < 1:
            raise ConfigError(f"time_limit must be a number of seconds >= 1, got {cfg.time_limit!r}", field="time_limit")
    else:
        if cfg.convergence_patience is None:
            raise ConfigError("convergence_patience is required when budget_mode is 'convergence'",
                              field="convergence_patience")
        normalised["convergence_patience"] = _positive_int(cfg.convergence_patience, "convergence_patience")
    if cfg.sampler not in SAMPLERS:
        raise ConfigError(f"sampler must be one of {', '.join(SAMPLERS)}, got {cfg.sampler!r}", field="sampler")
    if not isinstance(cfg.sweep, bool):
        raise ConfigError(f"sweep must be True or False, got {cfg.sweep!r}", field="sweep")
    if cfg.sweep or is_sweep(cfg):
        normalised.update(check_sweep(cfg, dims))
    else:
        if cfg.sweep_batch is not None:
            raise ConfigError("sweep_batch needs a sweep (sampler 'grid', or sweep=True with random or qmc)",
                              field="sweep_batch")
        n_objectives = len(normalised.get("objectives") or ()) or 1
        normalised["sampler_options"] = check_sampler(
            cfg.sampler, cfg.sampler_options if cfg.sampler_options is not None else {},
            n_objectives=n_objectives, constrained=bool(normalised.get("constraints")))
    if cfg.pruner not in PRUNERS:
        why = UNSUPPORTED_PRUNERS.get(cfg.pruner) if isinstance(cfg.pruner, str) else None
        raise ConfigError(f"pruner must be one of {', '.join(PRUNERS)}, got {cfg.pruner!r}"
                          + (f": {why}" if why else ""), field="pruner")
    _positive_int(cfg.n_startup_trials, "n_startup_trials", minimum=0)
    _positive_int(cfg.pruner_warmup_trials, "pruner_warmup_trials", minimum=0)
    if cfg.seed is not None and (isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int)):
        raise ConfigError(f"seed must be an integer or None, got {cfg.seed!r}", field="seed")
    if cfg.study_name is not None and (not isinstance(cfg.study_name, str) or not cfg.study_name.strip()):
        raise ConfigError(f"study_name must be a non-empty string, got {cfg.study_name!r}", field="study_name")
    if cfg.study_name is not None and set(cfg.study_name.strip()) <= {"."}:
        raise ConfigError(f"study_name {cfg.study_name!r} is not a name (it would be a folder path); choose a name "
                          "with letters or digits", field="study_name")
    if cfg.output_dir is not None:
        out = os.fspath(cfg.output_dir)
        if os.path.exists(out) and not os.path.isdir(out):
            raise ConfigError(f"output_dir {out!r} is a file, not a folder; give a folder for results.csv and "
                              "summary.json", field="output_dir")
    if cfg.storage is not None:
        if not isinstance(cfg.storage, (str, os.PathLike)):
            raise ConfigError(f"storage must be a journal file path or a URL, got {cfg.storage!r}", field="storage")
        storage = os.fspath(cfg.storage)
        if "://" not in storage and os.path.isdir(storage):
            raise ConfigError(f"storage {storage!r} is a folder; give a journal file path, e.g. "
                              f"{os.path.join(storage, 'study.journal')!r}, or a database/Redis URL", field="storage")
        if storage.startswith("sqlite:") and workers > 1:
            raise _prefixed(
                "storage",
                "SQLite cannot be shared safely by several processes; use worker_processes=1, "
                "a journal file path (default), or a PostgreSQL/MySQL/Redis URL",
            )
    return ValidatedConfig(opt=replace(opt, start_method=start_method), config=replace(cfg, **normalised),
                           strategy=strategy, space=dims, score=score)
