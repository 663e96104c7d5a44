"""The walk-forward runner: one optimisation per IS window, its OOS backtest, the records, the files, resume."""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ._stitch import StitchedResult, _empty_trades, stitch, stitched_trades
from ._windows import Window, _positive_days, split_windows


#: study user attr written when a window's optimisation finished with its whole budget (what resume reads)
WINDOW_ATTR = "merlin.walkforward.window"
#: file name of the journal that holds every window's study, in the output folder
WF_JOURNAL_NAME = "walkforward.journal"
#: the metrics shown per window (IS of the chosen trial, OOS of its backtest) and in the table
WINDOW_METRICS = ("net_profit_pct", "max_drawdown_pct", "total_trades", "sharpe_ratio")
_OUTPUT_FILES = ("windows.csv", "oos_trades.csv", "stitched_equity.csv", "summary.json")


@dataclass
class WindowResult:
    """One window of a walk-forward analysis: its optimisation (IS) and the OOS backtest of its choice.

    ``params``: the chosen parameters (fixed ones included; ``None`` when flat),
    ``optimized``: the names that were optimised, ``is_metrics``: every metric
    of the chosen trial, ``is_target``: its target value (the post-hoc score for
    the ``score`` target), ``oos_metrics``: every metric of the OOS backtest,
    ``oos_equity``: the backtest's equity over the OOS bars only, ``oos_trades``:
    its trades, ``oos_open_at_end``: a position was still open at the OOS end
    (the kit's strategies leave it open and out of the trades and the net
    profit, while the equity curve, and so the stitched curve, marks it to
    market: then :meth:`oos_return_pct` differs from the OOS net profit).
    ``flat``: no valid trial (or no OOS bar), so no trade and 0 %
    (``flat_reason`` says why).  ``reused``: taken from a finished study of an
    earlier call (no trial was run).  ``run``: the window's
    :class:`~merlin_kit.optimize.OptimizationRun` (``None`` when reused).
    """

    window: Window
    study_name: str
    params: dict[str, Any] | None
    optimized: list[str]
    is_metrics: dict[str, Any] | None
    is_target: float | None
    oos_metrics: dict[str, Any]
    oos_target: float | None
    oos_equity: pd.Series
    oos_trades: pd.DataFrame
    oos_open_at_end: bool
    trials: int
    best_trial_number: int | None
    flat: bool
    flat_reason: str | None
    reused: bool
    seconds: float
    run: Any = field(default=None, repr=False, compare=False)

    @property
    def number(self) -> int:
        return self.window.number

    def oos_return_pct(self) -> float:
        """The OOS return path's last value in % (``e(last) / e(first OOS bar) − 1``): what the stitching uses."""
        e = self.oos_equity
        return 0.0 if len(e) == 0 else float((e.iloc[-1] / e.iloc[0] - 1.0) * 100.0)


@dataclass
class WalkForwardResult:
    """What :func:`walk_forward` found: per-window records, the stitched OOS result and a summary."""

    windows: list[WindowResult]
    stitched: StitchedResult
    trades: pd.DataFrame
    summary: dict[str, Any]
    target: str
    folder: Path | None = None

    def windows_frame(self) -> pd.DataFrame:
        """One row per window: dates, bar counts, chosen (optimised) parameters, IS and OOS metrics, trials, flat."""
        names: list[str] = []
        for w in self.windows:
            names += [n for n in w.optimized if n not in names]
        rows = []
        for w in self.windows:
            win = w.window
            row: dict[str, Any] = {
                "window": win.number, "is_start": win.is_start, "is_end": win.is_end,
                "oos_start": win.oos_start, "oos_end": win.oos_end, "is_bars": win.is_bars, "oos_bars": win.oos_bars,
            }
            for n in names:
                row[n] = None if w.params is None else w.params.get(n)
            for m in WINDOW_METRICS:
                row[f"is_{m}"] = None if w.is_metrics is None else w.is_metrics.get(m)
            row["is_target"] = w.is_target
            for m in WINDOW_METRICS:
                row[f"oos_{m}"] = w.oos_metrics.get(m)
            row["oos_target"] = w.oos_target
            row["oos_return_pct"] = w.oos_return_pct()
            row["oos_open_at_end"] = w.oos_open_at_end
            row.update(trials=w.trials, best_trial=w.best_trial_number, flat=w.flat, flat_reason=w.flat_reason,
                       reused=w.reused, study=w.study_name)
            rows.append(row)
        return pd.DataFrame(rows)

    def to_files(self, folder: str | os.PathLike) -> list[Path]:
        """windows.csv, oos_trades.csv, stitched_equity.csv and summary.json in ``folder``, each replaced atomically."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        texts = {
            "windows.csv": self.windows_frame().to_csv(index=False),
            "oos_trades.csv": self.trades.to_csv(index=False),
            "stitched_equity.csv": self.stitched.equity.rename("equity").to_csv(index_label="time"),
            "summary.json": json.dumps(self.summary, indent=2, default=str),
        }
        paths = []
        for name in _OUTPUT_FILES:
            path = out / name
            _write_atomic(path, texts[name])
            paths.append(path)
        return paths


def walk_forward(opt: Any, cfg: Any = None, *, is_days: int, oos_days: int, anchored: bool = False,
                 start: Any = None, end: Any = None,
                 on_window: Callable[[int, int, Any], None] | None = None) -> WalkForwardResult:
    """Walk-forward analysis of ``opt`` / ``cfg`` (spec VALIDATION.md: windows, "Per window", "Stitched").

    ``opt`` (:class:`~merlin_kit.optimize.OptimizationConfig`) and ``cfg``
    (:class:`~merlin_kit.optimize.OptunaConfig`) are those of a plain
    optimisation; ``opt.start``/``opt.end`` (or ``start``/``end`` here, which
    win) bound the whole analysis, and each window's optimisation gets the IS
    window as its start/end.  The data is loaded once; the windows are split
    from the whole file (:func:`split_windows`).

    Per window ``k``: one :func:`~merlin_kit.optimize.optimize` on the IS window
    with study name ``<base>-wKK`` (``base`` = ``cfg.study_name``, default
    ``<strategy>-<is_days>d-<oos_days>d`` plus ``-anchored``); its best
    completed trial by the target (``run.best``) is backtested on the OOS
    window with ``opt.warmup_bars`` warm-up bars taken from the whole file.  No
    completed trial (or no OOS bar): the window is flat (0 %, no trades) and
    says so.  ``on_window(number, total, run)`` is called after each window
    (``run`` is ``None`` for a reused window).

    Files: every window's study lives in ONE storage, ``cfg.storage`` or the
    journal ``walkforward.journal`` in the output folder (``cfg.output_dir``,
    default ``./merlin_runs/<base>-wf``), so optuna-dashboard shows the
    analysis window by window; each window's results.csv / summary.json go to
    ``<folder>/windows/wKK``; windows.csv, oos_trades.csv, stitched_equity.csv
    and summary.json go to the folder at the end.

    Resume: when a window's optimisation ends with its whole budget, the study
    gets the attr ``merlin.walkforward.window`` (its chosen parameters, IS
    metrics, trial count and a key of everything that decides its trials: data
    fingerprint of the IS window, dates, strategy, search space, fixed
    parameters, target, filters, score settings, budget, sampler, pruner and
    seed; not the number of workers).  Calling ``walk_forward`` again with the
    same settings and storage (the same output folder) takes such windows from
    their studies without running a trial and only recomputes their OOS
    backtests; windows that did not finish (Ctrl-C, a crash) are run again in
    the same study, whose earlier trials count towards the window's choice
    (optimize()'s resume).  Changing the budget or the sampler runs every
    window again in its study (its best is then over all of the study's
    trials); changing what the trials mean (data, dates, search space, target,
    ...) is refused by optimize() naming the differences: use another
    ``study_name`` or output folder.

    Processes: the worker processes (``opt.worker_processes``) are started
    anew for every window by its optimize() call, which gives each window the
    exact trial budget, Stop and dead-worker handling of a plain optimisation.
    One pool of workers kept across windows is not implemented in this version.
    Ctrl-C stops the current window and raises KeyboardInterrupt (finished
    windows are kept for a resume).

    WFE (spec): annualised mean OOS net profit ÷ annualised mean IS net profit
    × 100, annualised = mean % × 365 ÷ ``oos_days`` / ``is_days`` (``is_days``
    also in anchored mode, as the spec says, although anchored IS windows grow);
    a flat window counts 0 % in both means.
    """
    from ..backtest import backtest
    from ..data import fingerprint, load_data, prepare
    from ..optimize import OptunaConfig, close_storage, default_run_dir, open_storage, optimize, redact
    from ..optimize.config import target_metric, validate
    from ..scoring import minmax_score

    t_start = time.time()
    cfg = OptunaConfig() if cfg is None else cfg
    checked = validate(opt, cfg)  # every config error before any data is read or any study is touched
    strategy = checked.strategy
    metric = target_metric(checked.config.target)
    is_days = _positive_days(is_days, "is_days")
    oos_days = _positive_days(oos_days, "oos_days")
    base = cfg.study_name or f"{strategy.id}-{is_days}d-{oos_days}d{'-anchored' if anchored else ''}"
    frame = load_data(opt.data)
    windows = split_windows(frame, is_days=is_days, oos_days=oos_days,
                            start=opt.start if start is None else start, end=opt.end if end is None else end,
                            anchored=anchored)
    folder = Path(cfg.output_dir) if cfg.output_dir is not None else default_run_dir(f"{base}-wf")
    folder.mkdir(parents=True, exist_ok=True)
    storage_url = os.fspath(cfg.storage) if cfg.storage is not None else str(folder / WF_JOURNAL_NAME)
    # a path or "sample" goes to optimize() as it is (workers elsewhere can read it); anything else as the frame
    data_arg = opt.data if isinstance(opt.data, (str, os.PathLike)) else frame
    space = [asdict(d) for d in checked.space]
    fixed = {k: strategy.param(k).validate(v) for k, v in dict(opt.fixed_params or {}).items()}
    c = checked.config
    settings = {
        "strategy": strategy.id, "space": space, "fixed_params": fixed, "warmup_bars": opt.warmup_bars,
        "min_profit": opt.min_profit, "score": checked.score.to_dict(), "target": metric,
        "budget_mode": c.budget_mode, "n_trials": c.n_trials, "time_limit": c.time_limit,
        "convergence_patience": c.convergence_patience, "sampler": c.sampler, "n_startup_trials": c.n_startup_trials,
        "pruner": c.pruner, "pruner_warmup_trials": c.pruner_warmup_trials,
        "seed": c.seed,
    }
    optimized = [d["name"] for d in space]
    score_cfg = opt.score_config()

    storage = None
    results: list[WindowResult] = []
    try:
        for w in windows:
            t_w = time.time()
            name = f"{base}-w{w.number:02d}"
            key = _window_key(settings, w, fingerprint(prepare(frame, w.is_start, w.is_end, opt.warmup_bars))
                              if w.is_bars > 0 else None)
            if storage is None and _journal_exists_or_server(storage_url):
                storage = open_storage(storage_url, heartbeat=False)
            record = _finished_record(storage, name, key)
            run = None
            if record is None and w.is_bars > 0:
                run = optimize(replace(opt, data=data_arg, start=w.is_start, end=w.is_end),
                               replace(cfg, study_name=name, storage=storage_url, save_study=True,
                                       output_dir=folder / "windows" / f"w{w.number:02d}"))
                reason = run.summary.stop_reason
                if reason in ("interrupted", "stopped by user"):
                    raise KeyboardInterrupt(
                        f"walk-forward {reason} in window {w.number} of {len(windows)}; the finished windows are kept "
                        f"in {redact(storage_url)}: run it again with the same settings and folder to resume")
                best = run.best
                record = {
                    "key": key, "trials": run.summary.total_trials,
                    "params": None if best is None else dict(best.params),
                    "is_metrics": None if best is None else dict(best.metrics),
                    "is_target": None if best is None else best.target_value(run.metric),
                    "best_trial_number": None if best is None else best.trial_number,
                }
                complete = c.budget_mode != "trials" or run.summary.total_trials >= int(c.n_trials or 0)
                if complete:
                    if storage is None:
                        storage = open_storage(storage_url, heartbeat=False)
                    storage.set_study_user_attr(storage.get_study_id_from_name(name), WINDOW_ATTR,
                                                json.loads(json.dumps(record, default=_json_default)))
                reused = False
            elif record is None:  # no IS bar: nothing to optimise
                record = {"key": key, "trials": 0, "params": None, "is_metrics": None, "is_target": None,
                          "best_trial_number": None}
                reused = False
            else:
                reused = True

            params = record["params"]
            flat_reason = None
            if params is None:
                flat_reason = "no IS bars" if w.is_bars == 0 else "no completed trial in the IS optimisation"
            elif w.oos_bars == 0:
                flat_reason = "no OOS bars (the OOS period is a gap in the data)"
            if flat_reason is None:
                bt = backtest(frame, opt.strategy, params, start=w.oos_start, end=w.oos_end,
                              warmup_bars=opt.warmup_bars)
                oos_metrics = dict(bt.metrics)
                oos_equity = bt.equity.iloc[bt.data.trade_start_idx:].copy()
                oos_trades = bt.trades.reset_index(drop=True)
                open_at_end = bool(bt.equity.iloc[-1] != bt.balance.iloc[-1])
                oos_target = minmax_score(oos_metrics, score_cfg) if metric == "score" else oos_metrics.get(metric)
            else:
                oos_metrics = {"net_profit_pct": 0.0, "max_drawdown_pct": 0.0, "total_trades": 0, "sharpe_ratio": None}
                oos_equity = pd.Series(100.0, index=frame.index[w.oos_start_idx:w.oos_end_idx + 1], name="equity")
                oos_trades = _empty_trades()
                open_at_end = False
                oos_target = None
            result = WindowResult(
                window=w, study_name=name, params=params, optimized=optimized, is_metrics=record["is_metrics"],
                is_target=record["is_target"], oos_metrics=oos_metrics, oos_target=oos_target,
                oos_equity=oos_equity, oos_trades=oos_trades, oos_open_at_end=open_at_end, trials=int(record["trials"]),
                best_trial_number=record["best_trial_number"], flat=flat_reason is not None,
                flat_reason=flat_reason, reused=reused, seconds=time.time() - t_w, run=run)
            results.append(result)
            if on_window is not None:
                on_window(w.number, len(windows), run)
    finally:
        if storage is not None:
            close_storage(storage)

    stitched = stitch(results, is_days=is_days, oos_days=oos_days)
    trades = stitched_trades(results)
    summary = {
        "method": "walk_forward",
        "strategy": strategy.id,
        "target": c.target,
        "budget_mode": c.budget_mode,
        "budget": {"trials": c.n_trials, "time": c.time_limit, "convergence": c.convergence_patience}[c.budget_mode],
        "windows": len(results),
        "is_days": is_days,
        "oos_days": oos_days,
        "anchored": bool(anchored),
        "first_is_start": windows[0].is_start.isoformat(),
        "last_oos_end": windows[-1].oos_end.isoformat(),
        "stitched": stitched.metrics,
        "flat_windows": [r.number for r in results if r.flat],
        "reused_windows": [r.number for r in results if r.reused],
        "total_trials": sum(r.trials for r in results if not r.reused),
        "studies": [r.study_name for r in results],
        "storage": redact(storage_url),
        "folder": str(folder),
        "total_time_seconds": time.time() - t_start,
    }
    out = WalkForwardResult(windows=results, stitched=stitched, trades=trades, summary=summary, target=c.target,
                            folder=folder)
    out.to_files(folder)
    return out


def _window_key(settings: dict[str, Any], w: Window, data_fingerprint: str | None) -> str:
    """A hash of everything that decides a window's trials (not the number of workers)."""
    payload = {**settings, "is_start": w.is_start.isoformat(), "is_end": w.is_end.isoformat(),
               "data": data_fingerprint}
    text = json.dumps(payload, sort_keys=True, default=_json_default)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, (tuple, set)):
        return list(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def _journal_exists_or_server(location: str) -> bool:
    """Whether there may be earlier studies to reuse: a server, or a journal file that exists."""
    if "://" in location and not location.startswith("journal+"):
        return True
    path = location.split("://", 1)[1] if location.startswith("journal+") else location
    return os.path.exists(path)


def _finished_record(storage: Any, study_name: str, key: str) -> dict[str, Any] | None:
    """The walk-forward record of a finished window study with the same key, or None."""
    if storage is None:
        return None
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return None
    record = storage.get_study_user_attrs(study_id).get(WINDOW_ATTR)
    if isinstance(record, dict) and record.get("key") == key:
        return record
    return None


def _write_atomic(path: Path, text: str) -> None:
    """Write a temp file beside ``path``, then rename it over ``path`` (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
