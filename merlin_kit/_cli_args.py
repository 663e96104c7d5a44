"""How the ``merlin-kit`` commands read their arguments: parameter ranges, budgets, sampler and score
options, and the shared ``optimize``/``walkforward`` options, into the kit's config objects.

Kept apart from :mod:`merlin_kit.cli` (what each command does) so that either stays readable; every
parse error is a :class:`MerlinError` naming the option and the form it expects.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Sequence

from ._platform import DEFAULT_WORKERS_CAP, default_workers
from .errors import MerlinError
from .scoring import score_options


def parse_json_object(text: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MerlinError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise MerlinError(f"{what} must be a JSON object like '{{\"maLength\": 100}}', got {type(value).__name__}")
    return value


def parse_param_spec(spec: str) -> tuple[str, Any]:
    """``NAME``, ``NAME=min:max[:step]`` or ``NAME=a,b,c`` -> (name, range dict or None)."""
    name, sep, rng = spec.partition("=")
    name = name.strip()
    if not name:
        raise MerlinError(f"--params {spec!r}: expected NAME, NAME=min:max:step or NAME=a,b,c")
    if not sep:
        return name, None
    if ":" in rng:
        parts = rng.split(":")
        if len(parts) not in (2, 3):
            raise MerlinError(f"--params {spec!r}: a numeric range is min:max or min:max:step")
        try:
            nums = [float(x) for x in parts]
        except ValueError:
            raise MerlinError(f"--params {spec!r}: min, max and step must be numbers") from None
        nums = [int(x) if x.is_integer() else x for x in nums]
        return name, dict(zip(("min", "max", "step"), nums))
    choices: list[Any] = []
    for raw in rng.split(","):
        raw = raw.strip()
        low = raw.lower()
        if low in ("true", "false"):
            choices.append(low == "true")
            continue
        try:
            num = float(raw)
            choices.append(int(num) if num.is_integer() and "." not in raw else num)
        except ValueError:
            choices.append(raw)
    return name, {"choices": choices}


def parse_budget(text: str) -> dict[str, Any]:
    mode, _, value = text.partition(":")
    keys = {"trials": "n_trials", "time": "time_limit", "convergence": "convergence_patience"}
    if mode not in keys or not value:
        raise MerlinError(f"--budget {text!r}: expected trials:N, time:SECONDS or convergence:PATIENCE")
    try:
        number = float(value)
    except ValueError:
        raise MerlinError(f"--budget {text!r}: {value!r} is not a number") from None
    if mode != "time":
        if not number.is_integer():
            raise MerlinError(f"--budget {text!r}: {mode} needs a whole number")
        number = int(number)
    return {"budget_mode": mode, keys[mode]: number}


def parse_days(text: str) -> int:
    """``30d`` or ``30`` -> 30 (whole calendar days)."""
    raw = text[:-1] if text.lower().endswith("d") else text
    if not raw.isdigit() or int(raw) < 1:
        raise MerlinError(f"--holdout {text!r}: expected a number of days such as 30d")
    return int(raw)


def parse_sampler_options(specs: Sequence[str]) -> dict[str, Any]:
    """``--sampler-option KEY=VALUE`` (repeatable) -> options; a value is read as JSON (true, 20, 0.5) else text."""
    options: dict[str, Any] = {}
    for spec in specs:
        key, sep, raw = spec.partition("=")
        if not sep or not key.strip():
            raise MerlinError(f"--sampler-option {spec!r}: expected KEY=VALUE, e.g. popsize=20")
        try:
            options[key.strip()] = json.loads(raw)
        except ValueError:
            options[key.strip()] = raw
    return options


def sampler_config(args: argparse.Namespace) -> dict[str, Any]:
    """The sampler part of the OptunaConfig of ``optimize`` and ``walkforward``."""
    return dict(sampler=args.sampler, sampler_options=parse_sampler_options(args.sampler_option),
                n_startup_trials=args.startup_trials, seed=args.seed)


def worker_count(args: argparse.Namespace) -> int:
    """``--workers``, else the CPU count; with ``--cluster`` 1, which submits one task per Dask worker thread."""
    if args.workers is not None:
        return args.workers
    return 1 if getattr(args, "cluster", None) else default_workers()


def optimization_config(args: argparse.Namespace, **extra: Any) -> Any:
    """The OptimizationConfig of ``optimize`` and ``walkforward``: data, strategy, --params, --fixed, window."""
    from .optimize import OptimizationConfig

    ranges: dict[str, Any] = {}
    names: list[str] | None = None
    if args.params:
        names = []
        for spec in args.params:
            name, rng = parse_param_spec(spec)
            names.append(name)
            if rng is not None:
                ranges[name] = rng
    score = score_options(args.score_weights, args.score_bounds, args.score_metrics)
    return OptimizationConfig(
        data=args.data, strategy=args.strategy, optimize_params=names, param_ranges=ranges, score=score,
        fixed_params=parse_json_object(args.fixed, "--fixed") if args.fixed else {},
        start=args.start, end=args.end, warmup_bars=args.warmup, worker_processes=worker_count(args), **extra,
    )


def add_search_arguments(parser: argparse.ArgumentParser, *, budget_per: str) -> None:
    """What ``optimize`` and ``walkforward`` both take: data, strategy, parameters, window, budget, workers."""
    parser.add_argument("--data", default="sample", help="CSV/Parquet/Feather path, or 'sample' (default) for the bundled synthetic data")
    parser.add_argument("--strategy", default="s01_trailing_ma", help="strategy id or 'package.module:Name'")
    parser.add_argument("--params", nargs="+", metavar="SPEC",
                        help="parameters to optimise: NAME (default range), NAME=min:max:step or NAME=a,b,c "
                             "(default: the strategy's default set)")
    parser.add_argument("--fixed", help="JSON object of fixed parameter values")
    parser.add_argument("--start", help="first trading bar (ISO-8601, UTC)")
    parser.add_argument("--end", help="last bar (ISO-8601, UTC, inclusive)")
    parser.add_argument("--warmup", type=int, default=1000, help="warm-up bars before the window (default 1000)")
    parser.add_argument("--budget", default="trials:200",
                        help=f"{budget_per}trials:N | time:SECONDS | convergence:PATIENCE (default trials:200)")
    parser.add_argument("--target", default="score",
                        help="score (default), net_profit, romad, sharpe, max_drawdown or a metric name")
    parser.add_argument("--workers", type=int, default=None,
                        help=f"worker processes (default: the CPU count, at most {DEFAULT_WORKERS_CAP}); with "
                             "--cluster: Dask tasks (default: one per Dask worker thread)")
    parser.add_argument("--cluster", metavar="ADDRESS",
                        help="run the workers as tasks on the Dask cluster at ADDRESS (tcp://scheduler:8786; needs "
                             "the [dask] extra, and a --storage every Dask worker reaches unless they all run on "
                             "this machine)")
    parser.add_argument("--sampler", default="tpe",
                        help="tpe (default), random, grid (every point of the stepped space once; always a sweep), "
                             "qmc, cmaes, nsga2, nsga3 or gp (README: which to pick); an unknown name is refused "
                             "with the list of allowed ones")
    parser.add_argument("--sampler-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a sampler option, e.g. popsize=20 for cmaes (repeatable; the README lists them)")
    parser.add_argument("--startup-trials", type=int, default=10,
                        help="random trials before tpe, gp and cmaes start modelling (default 10)")
    parser.add_argument("--sweep", action="store_true",
                        help="random/qmc: draw the points in advance and write each trial as one record (fast "
                             "backtests: several times the trials/s; needs a trials budget)")
    parser.add_argument("--sweep-batch", type=int, help="points per sweep batch (default: ~0.2 s of backtests)")
    parser.add_argument("--seed", type=int, help="sampler seed (worker k uses seed + k; qmc: one sequence)")
    parser.add_argument("--score-weights", metavar="M=W,...",
                        help="composite score weights, e.g. romad=0.5,sharpe=0.5 (metrics not named leave the score); "
                             "metrics: romad, sharpe, pf, ulcer, sqn, consistency")
    parser.add_argument("--score-bounds", action="append", metavar="M=MIN:MAX",
                        help="min-max bounds of score metrics, e.g. romad=0:30 (repeatable or a comma list)")
    parser.add_argument("--score-metrics", metavar="M,...", help="the metrics the score uses, e.g. romad,sharpe")
