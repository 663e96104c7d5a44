"""``merlin-kit`` command line: backtest, optimize, walkforward, worker, dashboard, strategies, params.

Errors a person caused (bad file, bad parameter, bad configuration) print one
line on stderr and exit with code 2; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, NoReturn, Sequence

from ._cli_args import (
    add_search_arguments, optimization_config, parse_budget, parse_days, parse_json_object, sampler_config,
)
from ._cli_show import add_info_commands, backtest_report, print_holdout_table, print_results_table
from ._platform import console_safe, join_process
from .errors import MerlinError

EXIT_USAGE = 2
#: what a signal means in a run's summary; a stopped command then exits with 128 + the signal's number
#: (130 for Ctrl-C, 143 for SIGTERM from ``timeout``, ``docker stop`` or systemd, 129 for SIGHUP)
STOP_SIGNALS = {"SIGINT": "interrupted (Ctrl-C)", "SIGTERM": "terminated (SIGTERM)", "SIGHUP": "hung up (SIGHUP)",
                "SIGBREAK": "interrupted (Ctrl-Break)"}  # SIGHUP: POSIX only; SIGBREAK: Windows only


class _Signals:
    """Ctrl-C, SIGTERM and SIGHUP caught while a command waits in its main thread (handlers restored on exit).

    The handler only records the signal (and calls ``on_signal``, which must be quick and safe in a
    handler); the waiting loop polls :attr:`signum` and does the actual stopping.
    """

    def __init__(self, on_signal: Callable[[int], None] | None = None) -> None:
        self.signum: int | None = None
        self.on_signal = on_signal
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_Signals":
        if threading.current_thread() is threading.main_thread():  # cli.main() called from a thread: none
            for name in STOP_SIGNALS:
                if hasattr(signal, name):
                    signum = getattr(signal, name)
                    self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
        if self.on_signal is not None:
            self.on_signal(signum)

    @property
    def reason(self) -> str | None:
        return None if self.signum is None else STOP_SIGNALS[signal.Signals(self.signum).name]

    @property
    def exit_code(self) -> int:
        return 0 if self.signum is None else 128 + self.signum


def cmd_backtest(args: argparse.Namespace) -> int:
    from .backtest import backtest

    params = parse_json_object(args.params, "--params") if args.params else None
    result = backtest(args.data, args.strategy, params, start=args.start, end=args.end, warmup_bars=args.warmup)
    if args.json:
        payload = result.to_dict()
        print(json.dumps({"metrics": payload["metrics"], "trades": payload["trades"]}))
        return 0
    print(backtest_report(result, args.data, start_given=args.start is not None))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from .data import format_for, load_data, save_ohlcv

    kind = format_for(args.output)  # a wrong suffix fails before a large file is read
    frame = load_data(args.input, name=args.input)
    save_ohlcv(frame, args.output)
    print(f"{args.output}: {len(frame)} bars written as {kind} (validated like any load)")
    return 0


class ProgressBar:
    """A one-line progress bar on stderr (redrawn in place on a terminal, a line every few seconds otherwise)."""

    def __init__(self, stream: Any = None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_line = 0.0

    def line(self, p: Any) -> str:
        from .optimize import progress_text

        filled = int(round(self.width * p.fraction))
        bar = "#" * filled + "." * (self.width - filled)
        best = "—" if p.best_value is None else f"{p.best_value:.4g}"
        eta = "" if p.eta_seconds is None else f"  ETA {p.eta_seconds:.0f}s"
        return (f"[{bar}] {progress_text(p)}  best {best}  {p.trials_per_second:.1f} trials/s  "
                f"workers {p.workers_alive}{eta}")

    def update(self, p: Any, final: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + self.line(p).ljust(110) + ("\n" if final else ""))
            self.stream.flush()
        elif final or now - self._last_line >= 5.0:
            self._last_line = now
            self.stream.write(self.line(p) + "\n")
            self.stream.flush()


def cmd_optimize(args: argparse.Namespace) -> int:
    import optuna

    from .optimize import OptunaConfig, default_run_dir, default_study_name, start_optimization
    from .optimize import summary_lines
    from .strategies import get_strategy

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    budget = parse_budget(args.budget)
    study_name = args.study or default_study_name(get_strategy(args.strategy).id)
    opt = optimization_config(args, min_profit=args.min_profit, start_method=args.start_method)
    holdout_start = None
    if args.holdout:
        from dataclasses import replace

        from .data import load_data
        from .robustness import holdout_split

        # the last N days stay out of the optimisation; the top results are then tested on them
        opt_end, holdout_start = holdout_split(load_data(args.data, name=args.data), parse_days(args.holdout),
                                               args.end)
        opt = replace(opt, end=opt_end)
    cfg = OptunaConfig(
        target=args.target, **sampler_config(args), study_name=study_name, storage=args.storage,
        pruner=args.pruner, save_study=not args.no_save_study, objectives=args.objectives,
        constraints=args.constraint or (), sweep=args.sweep, sweep_batch=args.sweep_batch,
        output_dir=args.out or default_run_dir(study_name), **budget,
    )
    # Ctrl-C, SIGTERM, SIGHUP: a graceful stop (results written, workers stopped, temp folder removed),
    # then exit 128 + the signal (130, 143, 129)
    with _Signals() as signals:
        # the CLI only waits: its own core runs worker 0 while the other workers start (see start_optimization)
        run = start_optimization(opt, cfg, cluster=args.cluster, parent_works=args.cluster is None)
        bar = ProgressBar()
        while not run.wait(0.5):
            if signals.signum is not None:
                run.stop(signals.reason)
                break
            bar.update(run.progress())
    bar.update(run.progress(), final=True)
    if run.error is not None:
        raise run.error
    summary = run.summary.to_dict()
    holdout = None if holdout_start is None else run.holdout(holdout_start, args.end)
    if holdout is not None and run.run_dir is not None:
        holdout.to_csv(run.run_dir / "holdout.csv", index=False)
    if args.json:
        shown = {k: v for k, v in summary.items() if k != "worker_reports"}
        if holdout is not None:
            shown["holdout"] = json.loads(holdout.to_json(orient="records"))
        print(json.dumps(shown, default=str))
        return signals.exit_code
    print_results_table(run)
    if holdout is not None:
        print_holdout_table(run, holdout)
    print()
    lines = summary_lines(run)
    print(lines[0])
    for line in lines[2:]:  # workers that had trouble, warnings (the best result is the table's first row)
        print(line, file=sys.stderr)
    if run.run_dir is not None:
        print(f"Results: {run.run_dir / 'results.csv'}, {run.run_dir / 'summary.json'}"
              + (f", study {run.summary.storage}" if run.summary.storage else ""))
    return signals.exit_code


def cmd_worker(args: argparse.Namespace) -> int:
    import multiprocessing

    import optuna

    from .optimize import check_join, default_worker_id, run_worker
    from .optimize.config import MAX_WORKERS

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not 1 <= args.workers <= MAX_WORKERS:
        raise MerlinError(f"--workers must be from 1 to {MAX_WORKERS}, got {args.workers}")
    # storage reachable, study exists, strategy trusted, data present and identical: one line and exit 2 otherwise
    trust = {"trust_key": args.trust_key, "allow_modules": args.allow_module or ()}
    check_join(args.storage, args.study, args.data, **trust)
    base = default_worker_id() if args.worker_id is None else args.worker_id
    if args.workers == 1:
        stats = run_worker(args.storage, args.study, base, None, args.data, **trust)
        # run_worker handles Ctrl-C/SIGTERM itself: the trial in flight finishes or goes back to the queue
        if stats is not None:
            print(f"merlin-kit worker {base}: {stats.trials} trials ({stats.failed} failed); {stats.stop_reason}",
                  file=sys.stderr)
        return 0 if stats is None or stats.signal is None else 128 + stats.signal
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=run_worker, args=(args.storage, args.study, base + i, os.getpid(), args.data),
                         kwargs=trust, name=f"merlin-worker-{base + i}") for i in range(args.workers)]

    joined: set[int] = set()  # a child not joined yet keeps its pid (at worst a zombie): safe to signal

    def forward(signum: int) -> None:
        # every signal becomes one SIGTERM to each child (they ignore the group's Ctrl-C): the first
        # lets their trials finish, a second gives them back to the queue
        for p in procs:
            if p.pid is not None and p.pid not in joined:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except OSError:
                    pass

    with _Signals(forward) as signals:
        for p in procs:
            p.start()
            if signals.signum is not None and p.pid is not None:  # started after the signal: it gets it too
                os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            join_process(p)  # in slices: Ctrl-C interrupts it on Windows too
            joined.add(p.pid)
    codes = [p.exitcode for p in procs]
    if signals.signum is not None:
        print(f"merlin-kit worker: stopped by {signal.Signals(signals.signum).name}; worker exit codes {codes}",
              file=sys.stderr)
        return signals.exit_code
    if any(codes):
        print(f"merlin-kit worker: worker exit codes {codes}", file=sys.stderr)
        return 1
    return 0


def cmd_walkforward(args: argparse.Namespace) -> int:
    import optuna

    from .optimize import OptunaConfig, default_run_dir
    from .strategies import get_strategy
    from .walkforward import walk_forward

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    budget = parse_budget(args.budget)
    base = args.study or (f"{get_strategy(args.strategy).id}-{args.is_days}d-{args.oos_days}d"
                          + ("-anchored" if args.anchored else ""))
    opt = optimization_config(args)
    cfg = OptunaConfig(
        target=args.target, **sampler_config(args), study_name=base, storage=args.storage,
        sweep=args.sweep, sweep_batch=args.sweep_batch, save_study=True,
        output_dir=args.out or default_run_dir(f"{base}-wf"), **budget,
    )

    def progress(number: int, total: int, run: Any) -> None:
        how = "reused from its study" if run is None else f"{run.summary.total_trials} trials"
        print(f"window {number}/{total} done ({how})", file=sys.stderr, flush=True)

    result = walk_forward(opt, cfg, is_days=args.is_days, oos_days=args.oos_days, anchored=args.anchored,
                          on_window=progress, cluster=args.cluster)
    if args.json:
        print(json.dumps(result.summary, default=str))
        return 0
    rows = []
    for w in result.windows:
        win = w.window
        chosen = "flat: " + (w.flat_reason or "") if w.params is None else \
            " ".join(f"{n}={w.params.get(n)}" for n in w.optimized)
        rows.append({
            "#": win.number,
            "IS": f"{win.is_start:%Y-%m-%d}..{win.is_end:%Y-%m-%d}",
            "OOS": f"{win.oos_start:%Y-%m-%d}..{win.oos_end:%Y-%m-%d}",
            "params": chosen,
            "IS net %": None if w.is_metrics is None else w.is_metrics.get("net_profit_pct"),
            "OOS net %": w.oos_metrics.get("net_profit_pct"),
            "OOS trades": w.oos_metrics.get("total_trades"),
        })
    import pandas as pd

    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.2f}", na_rep="—"))
    m = result.stitched.metrics
    print()
    print(f"Stitched OOS: net profit {m['net_profit_pct']:.2f} %, max drawdown {m['max_drawdown_pct']:.2f} %, "
          f"{m['total_trades']} trades, WFE {m['wfe']:.1f} %, OOS win rate {m['oos_win_rate']:.1f} % "
          f"of {len(result.windows)} windows")
    print(f"Results: {result.folder} (windows.csv, oos_trades.csv, stitched_equity.csv, summary.json), "
          f"studies {result.summary['studies'][0]} .. {result.summary['studies'][-1]} in {result.summary['storage']}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    """optuna-dashboard on a run folder (with study.journal) or a storage URL, in the foreground.

    Ends with exit 0 on Ctrl-C (SIGINT), 143 on SIGTERM and 129 on SIGHUP (128 + the
    signal), stopping the dashboard process first; if this process is killed outright
    (SIGKILL) the dashboard process notices and ends itself within about a second.
    """
    import signal

    from .notebook.dashboard import DEFAULT_HOST, REMOTE_WARNING, dashboard, is_loopback_host, port_is_free

    target = args.storage or args.run_dir
    if not target:
        raise MerlinError("give a run folder (containing study.journal) or --storage URL")
    if args.storage and args.run_dir:
        raise MerlinError("give either a run folder or --storage, not both")
    host = DEFAULT_HOST if args.host is None else args.host
    if not is_loopback_host(host) and not args.allow_remote:
        raise MerlinError(f"--host {host or repr(host)} is not a loopback address and optuna-dashboard has no "
                          "authentication (anyone who reaches it can read and DELETE studies); "
                          "add --allow-remote to serve it anyway")
    port = args.port
    if port is None and port_is_free(8080, host):
        port = 8080

    class _Stopped(BaseException):
        def __init__(self, signum: int) -> None:
            super().__init__(signum)
            self.signum = signum

    def _on_signal(signum: int, _frame: Any) -> None:
        raise _Stopped(signum)

    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None:
            previous[signum] = signal.signal(signum, _on_signal)
    handle = None
    try:
        import warnings

        with warnings.catch_warnings():  # the remote warning is printed below, in this command's words
            warnings.simplefilter("ignore", RuntimeWarning)
            handle = dashboard(target, port=port, host=host, allow_remote=args.allow_remote)
        print(f"optuna-dashboard: {handle.url}  (storage {handle.storage_display}; Ctrl-C to stop)", flush=True)
        if not is_loopback_host(host):
            for url in handle.remote_urls:
                print(f"optuna-dashboard (other machines): {url}", flush=True)
            print(f"merlin-kit dashboard: warning: {REMOTE_WARNING}", file=sys.stderr, flush=True)
        code = handle.wait()
        log = handle.log()
    except RuntimeError as exc:  # the dashboard process did not start; its log is in the message
        raise MerlinError(str(exc)) from None
    except KeyboardInterrupt:
        return 0
    except _Stopped as stop:
        return 128 + stop.signum
    finally:
        for signum in previous:  # a second signal must not interrupt the clean-up
            signal.signal(signum, signal.SIG_IGN)
        if handle is not None:
            handle.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print(f"merlin-kit dashboard: optuna-dashboard exited with code {code}:\n{log[-2000:]}", file=sys.stderr)
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="merlin-kit", description="Backtest and optimise trading strategies.")
    sub = parser.add_subparsers(dest="command", required=True)

    bt = sub.add_parser("backtest", help="run one backtest and print a report")
    bt.add_argument("--data", required=True, help="CSV/Parquet/Feather path, or 'sample' for the bundled synthetic data")
    bt.add_argument("--strategy", default="s01_trailing_ma", help="strategy id or 'package.module:Name'")
    bt.add_argument("--params", help="JSON object of parameter values, e.g. '{\"maLength\": 100}'")
    bt.add_argument("--start", help="first trading bar (ISO-8601, UTC)")
    bt.add_argument("--end", help="last bar (ISO-8601, UTC, inclusive)")
    bt.add_argument("--warmup", type=int, default=1000, help="warm-up bars before --start (default 1000)")
    bt.add_argument("--json", action="store_true", help="print {metrics, trades} as one JSON object")
    bt.set_defaults(func=cmd_backtest)

    op = sub.add_parser("optimize", help="optimise a strategy's parameters with N worker processes")
    add_search_arguments(op, budget_per="")
    op.add_argument("--pruner", default="none",
                    help="none (default), median or percentile: a trial whose value is below the median (or the "
                    "25th percentile) of earlier trials' values is marked PRUNED")
    op.add_argument("--min-profit", type=float, help="prune trials whose net profit %% is below this")
    op.add_argument("--objectives", metavar="M:DIR,...",
                    help="2-6 objectives, e.g. net_profit_pct:max,max_drawdown_pct:min (replaces --target; "
                         "the first is primary)")
    op.add_argument("--constraint", action="append", metavar="'METRIC OP N'",
                    help="a constraint on any metric, e.g. 'total_trades >= 30' (OP: >= <= > <); repeatable")
    op.add_argument("--storage", help="journal file path or postgresql:// mysql:// redis:// URL (default: the run folder)")
    op.add_argument("--study", help="study name (an existing study is resumed)")
    op.add_argument("--out", help="run folder (default ./merlin_runs/<study>)")
    op.add_argument("--no-save-study", action="store_true", help="discard the study journal after the run")
    op.add_argument("--start-method", default="auto",
                    help="auto (default: forkserver on Linux/macOS, spawn on Windows), spawn, forkserver or fork")
    op.add_argument("--holdout", metavar="DAYS",
                    help="keep the last DAYS (e.g. 30d) out of the optimisation and test the top 20 results on "
                         "them (table, holdout.csv)")
    op.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    op.set_defaults(func=cmd_optimize)

    wk = sub.add_parser("worker", help="join an existing study (from any machine) and run its trials")
    wk.add_argument("--storage", required=True,
                    help="the study's storage: postgresql://USER:PASSWORD@HOST/DB, mysql://..., redis://HOST:PORT/DB "
                         "or a journal file path")
    wk.add_argument("--study", required=True, help="study name")
    wk.add_argument("--data", help="local path of the study's data (checked against its fingerprint)")
    wk.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    wk.add_argument("--worker-id", type=int, help="first worker id (default derived from the pid)")
    wk.add_argument("--trust-key", metavar="KEY",
                    help="the run's trust key, needed for a pickled (notebook) strategy; prefer the environment "
                         "variable MERLIN_TRUST_KEY (the default), which other users cannot see in the process list")
    wk.add_argument("--allow-module", action="append", metavar="PKG",
                    help="allow the study's strategy 'PKG.module:Name' to be imported (repeatable; also "
                         "MERLIN_ALLOW_MODULES=pkg1,pkg2); merlin_kit and installed plug-ins are always allowed")
    wk.set_defaults(func=cmd_worker)

    wf = sub.add_parser("walkforward", help="walk-forward analysis: optimise each IS window, trade the best on the next OOS window")
    wf.add_argument("--is-days", type=int, required=True, help="in-sample window in calendar days")
    wf.add_argument("--oos-days", type=int, required=True, help="out-of-sample window in calendar days")
    wf.add_argument("--anchored", action="store_true", help="every IS window starts at the first one's start")
    add_search_arguments(wf, budget_per="per window: ")
    wf.add_argument("--storage", help="storage of the window studies (default: <out>/walkforward.journal)")
    wf.add_argument("--study", help="base name of the window studies (<study>-w01, ...)")
    wf.add_argument("--out", help="output folder (default ./merlin_runs/<study>-wf); rerun with it to resume")
    wf.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    wf.set_defaults(func=cmd_walkforward)

    cv = sub.add_parser("convert", help="validate OHLCV and write it as CSV, Parquet or Feather (by suffix)")
    cv.add_argument("input", help="CSV/Parquet/Feather path, or 'sample'")
    cv.add_argument("output", help="output path: .csv, .parquet/.pq or .feather/.arrow/.ipc")
    cv.set_defaults(func=cmd_convert)

    db = sub.add_parser("dashboard", help="open a study in optuna-dashboard (127.0.0.1 unless --host)")
    db.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="run folder containing study.journal")
    db.add_argument("--storage", help="journal file path or postgresql:// mysql:// redis:// sqlite:/// URL")
    db.add_argument("--host", help="address to bind (default 127.0.0.1); a non-loopback one needs --allow-remote")
    db.add_argument("--allow-remote", action="store_true",
                    help="allow a --host other machines can reach (optuna-dashboard has no authentication: "
                         "whoever reaches the port can read and delete studies)")
    db.add_argument("--port", type=int, help="port (default 8080, or a free one when 8080 is taken)")
    db.set_defaults(func=cmd_dashboard)
    add_info_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    console_safe()
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except MerlinError as exc:
        print(f"merlin-kit {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"merlin-kit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `merlin-kit ... | head`: the reader left; no traceback, and none at exit either
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), sys.stdout.fileno())
        return 0


def console_main() -> NoReturn:
    """The ``merlin-kit`` command (and ``python -m merlin_kit``): :func:`main`, then a quick exit.

    With numba kernels loaded, the interpreter's final clean-up (freeing every compiled kernel's LLVM
    objects one by one, after the exit handlers) adds ~0.5 s to each command, which a user waits for
    with nothing left to do.  So once the command has returned, the exit handlers run (temporary
    folders, multiprocessing, logging), stdout and stderr are flushed, and the process ends with
    ``os._exit``.  A command that leaves a non-daemon thread running exits the ordinary way.
    """
    code = main()
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach the reader
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    console_main()
