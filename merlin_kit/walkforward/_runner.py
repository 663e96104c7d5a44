"""The walk-forward analysis's pieces: its plan (windows, storage, settings), the per-window records and
OOS backtests, the result and its files, resume records.  The run itself (processes, stop) is in :mod:`._run`."""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._platform import write_text_atomic
from ._stitch import StitchedResult, _empty_trades, stitch, stitched_trades
from ._windows import Window, _positive_days, split_windows


#: study user attr written when a window's optimisation finished with its whole budget (what resume reads)
WINDOW_ATTR = "merlin.walkforward.window"
#: file name of the journal that holds every window's study, in the output folder
WF_JOURNAL_NAME = "walkforward.journal"
#: the metrics shown per window (IS of the chosen trial, OOS of its backtest) and in the table
WINDOW_METRICS = ("net_profit_pct", "max_drawdown_pct", "total_trades", "sharpe_ratio")
#: the stop reasons of a window optimisation that did not finish its budget
STOPPED_REASONS = ("interrupted", "stopped by user")
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
            write_text_atomic(path, texts[name])
            paths.append(path)
        return paths


@dataclass
class WalkForwardPlan:
    """Everything a walk-forward analysis decided before its first trial: windows, studies, storage, settings.

    Built by :func:`plan_walk_forward`, which raises every configuration error
    (:class:`~merlin_kit.errors.ConfigError`) before any study is touched.
    """

    opt: Any
    cfg: Any
    #: ``cfg`` validated and normalised
    checked_cfg: Any
    strategy: Any
    metric: str
    is_days: int
    oos_days: int
    anchored: bool
    base: str
    frame: pd.DataFrame
    windows: list[Window]
    folder: Path
    storage_url: str
    #: what goes to each window's optimisation as ``data`` (a path or "sample" as given, else the frame)
    data_arg: Any
    #: everything that decides a window's trials (the resume key), not the number of workers
    settings: dict[str, Any]
    optimized: list[str]

    def study_name(self, w: Window) -> str:
        return f"{self.base}-w{w.number:02d}"

    def window_folder(self, w: Window) -> Path:
        return self.folder / "windows" / f"w{w.number:02d}"

    def key(self, w: Window) -> str:
        from ..data import fingerprint, prepare
        fp = fingerprint(prepare(self.frame, w.is_start, w.is_end, self.opt.warmup_bars)) if w.is_bars > 0 else None
        return _window_key(self.settings, w, fp)

    def window_configs(self, w: Window) -> tuple[Any, Any]:
        """The window's OptimizationConfig and OptunaConfig: the IS window, its study in the analysis's storage."""
        return (replace(self.opt, data=self.data_arg, start=w.is_start, end=w.is_end),
                replace(self.cfg, study_name=self.study_name(w), storage=self.storage_url, save_study=True,
                        output_dir=self.window_folder(w)))

    def record(self, key: str, run: Any) -> dict[str, Any]:
        """The resume record of a window's finished optimisation (what WINDOW_ATTR stores)."""
        best = None if run is None else run.best
        return {
            "key": key, "trials": 0 if run is None else run.summary.total_trials,
            "params": None if best is None else dict(best.params),
            "is_metrics": None if best is None else dict(best.metrics),
            "is_target": None if best is None else best.target_value(run.metric),
            "best_trial_number": None if best is None else best.trial_number,
        }

    def complete(self, run: Any) -> bool:
        """Whether a window's optimisation used its whole budget (then it is recorded for resume)."""
        c = self.checked_cfg
        if run.summary.stop_reason in STOPPED_REASONS:
            return False
        return c.budget_mode != "trials" or run.summary.total_trials >= int(c.n_trials or 0)

    def window_result(self, w: Window, record: dict[str, Any], *, run: Any, reused: bool,
                      seconds: float) -> WindowResult:
        """The window's record plus the OOS backtest of its choice (or a flat window that says why)."""
        from ..backtest import backtest
        from ..scoring import minmax_score
        params = record["params"]
        flat_reason = None
        if params is None:
            flat_reason = "no IS bars" if w.is_bars == 0 else "no completed trial in the IS optimisation"
        elif w.oos_bars == 0:
            flat_reason = "no OOS bars (the OOS period is a gap in the data)"
        frame = self.frame
        if flat_reason is None:
            bt = backtest(frame, self.opt.strategy, params, start=w.oos_start, end=w.oos_end,
                          warmup_bars=self.opt.warmup_bars)
            oos_metrics = dict(bt.metrics)
            oos_equity = bt.equity.iloc[bt.data.trade_start_idx:].copy()
            oos_trades = bt.trades.reset_index(drop=True)
            open_at_end = bool(bt.equity.iloc[-1] != bt.balance.iloc[-1])
            oos_target = (minmax_score(oos_metrics, self.opt.score_config()) if self.metric == "score"
                          else oos_metrics.get(self.metric))
        else:
            oos_metrics = {"net_profit_pct": 0.0, "max_drawdown_pct": 0.0, "total_trades": 0, "sharpe_ratio": None}
            oos_equity = pd.Series(100.0, index=frame.index[w.oos_start_idx:w.oos_end_idx + 1], name="equity")
            oos_trades = _empty_trades()
            open_at_end = False
            oos_target = None
        return WindowResult(
            window=w, study_name=self.study_name(w), params=params, optimized=self.optimized,
            is_metrics=record["is_metrics"], is_target=record["is_target"], oos_metrics=oos_metrics,
            oos_target=oos_target, oos_equity=oos_equity, oos_trades=oos_trades, oos_open_at_end=open_at_end,
            trials=int(record["trials"]), best_trial_number=record["best_trial_number"],
            flat=flat_reason is not None, flat_reason=flat_reason, reused=reused, seconds=seconds, run=run)

    def result(self, results: list[WindowResult], *, seconds: float, stop_reason: str | None) -> WalkForwardResult:
        """The stitched result and summary of the finished windows (all of them, or fewer after a stop)."""
        from ..optimize import redact
        c = self.checked_cfg
        stitched = stitch(results, is_days=self.is_days, oos_days=self.oos_days)
        summary = {
            "method": "walk_forward",
            "strategy": self.strategy.id,
            "target": c.target,
            "budget_mode": c.budget_mode,
            "budget": {"trials": c.n_trials, "time": c.time_limit,
                       "convergence": c.convergence_patience}[c.budget_mode],
            "windows": len(results),
            "total_windows": len(self.windows),
            "complete": stop_reason is None,
            "stop_reason": stop_reason,
            "is_days": self.is_days,
            "oos_days": self.oos_days,
            "anchored": bool(self.anchored),
            "first_is_start": self.windows[0].is_start.isoformat(),
            "last_oos_end": self.windows[-1].oos_end.isoformat(),
            "stitched": stitched.metrics,
            "flat_windows": [r.number for r in results if r.flat],
            "reused_windows": [r.number for r in results if r.reused],
            "total_trials": sum(r.trials for r in results if not r.reused),
            "studies": [r.study_name for r in results],
            "storage": redact(self.storage_url),
            "folder": str(self.folder),
            "total_time_seconds": seconds,
        }
        out = WalkForwardResult(windows=results, stitched=stitched, trades=stitched_trades(results), summary=summary,
                                target=c.target, folder=self.folder)
        out.to_files(self.folder)
        return out


def plan_walk_forward(opt: Any, cfg: Any, *, is_days: int, oos_days: int, anchored: bool = False,
                      start: Any = None, end: Any = None) -> WalkForwardPlan:
    """Validate everything and split the windows; raises ConfigError/DataError before anything starts."""
    from ..data import load_data
    from ..optimize import OptunaConfig, default_run_dir
    from ..optimize.config import target_metric, validate

    cfg = OptunaConfig() if cfg is None else cfg
    checked = validate(opt, cfg)  # every config error before any data is read or any study is touched
    strategy = checked.strategy
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
    space = [asdict(d) for d in checked.space]
    fixed = {k: strategy.param(k).validate(v) for k, v in dict(opt.fixed_params or {}).items()}
    c = checked.config
    settings = {
        "strategy": strategy.id, "space": space, "fixed_params": fixed, "warmup_bars": opt.warmup_bars,
        "min_profit": opt.min_profit, "score": checked.score.to_dict(), "target": target_metric(c.target),
        "budget_mode": c.budget_mode, "n_trials": c.n_trials, "time_limit": c.time_limit,
        "convergence_patience": c.convergence_patience, "sampler": c.sampler, "n_startup_trials": c.n_startup_trials,
        "pruner": c.pruner, "pruner_warmup_trials": c.pruner_warmup_trials,
        "seed": c.seed,
        # only when set: the keys of windows run before sampler options existed stay the same
        **({"sampler_options": dict(c.sampler_options)} if c.sampler_options else {}),
    }
    return WalkForwardPlan(
        opt=opt, cfg=cfg, checked_cfg=c, strategy=strategy, metric=target_metric(c.target), is_days=is_days,
        oos_days=oos_days,
        anchored=bool(anchored), base=base, frame=frame, windows=windows, folder=folder, storage_url=storage_url,
        # a path or "sample" goes to the optimisations as it is (workers elsewhere can read it); else the frame
        data_arg=opt.data if isinstance(opt.data, (str, os.PathLike)) else frame,
        settings=settings, optimized=[d["name"] for d in space])

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
