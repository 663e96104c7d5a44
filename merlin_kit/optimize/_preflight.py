"""What a run checks and decides before any worker starts: strategy test backtest, storage, run folder.

Everything a person can get wrong fails here, in the calling process, with a
message that names the problem, so that no worker is started for a run that
cannot succeed (and nothing already computed is touched).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

from ..data import PreparedData
from ..errors import ConfigError, MerlinError, StrategyError
from ..metrics import compute_metrics, month_starts
from ..strategies import IndicatorCache, Strategy, StrategyOutput
from ._liveness import host_id, pid_alive
from ._storage import JOURNAL_NAME, StorageLocation
from .config import OptunaConfig

DEFAULT_RUNS_DIR = "merlin_runs"
#: the prefix of a run's private temp folder (window copy, data file, temporary journal)
RUN_TMP_PREFIX = "merlin-run-"
#: the file in it that names the process owning it
RUN_TMP_OWNER = "owner.json"
#: a temp folder younger than this is never removed (its owner may still be writing its owner file)
STALE_TMP_MIN_AGE_SECONDS = 10.0


#: names Windows reserves for devices, with any extension (``CON``, ``nul.txt``, ``COM1``): never a file name
WINDOWS_RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                              *(f"LPT{i}" for i in range(1, 10))})


def safe_name(name: str) -> str:
    """A study name made safe as a folder name on every file system.

    Letters, digits, ``_ . -`` only; no leading or trailing dots (Windows drops
    trailing ones); a device name Windows reserves (``CON``, ``NUL.x``, ``COM1``)
    gets a ``_`` appended.
    """
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "study"
    if safe.split(".")[0].upper() in WINDOWS_RESERVED:
        safe += "_"
    return safe


def default_study_name(strategy_id: str) -> str:
    return f"{strategy_id}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"


#: environment variable naming the folder that holds run folders (overrides the default)
RUNS_ENV = "MERLIN_KIT_RUNS"


def runs_root() -> Path:
    """Where run folders go unless a run names one: one predictable place per project.

    ``$MERLIN_KIT_RUNS`` when set; else ``merlin_runs/`` at the top of the git
    repository the current folder is in (a notebook in ``notebooks/`` and a
    shell at the top write to the same place); else ``./merlin_runs``.
    """
    env = os.environ.get(RUNS_ENV)
    if env:
        return Path(env).expanduser()
    here = Path.cwd()
    for folder in (here, *here.parents):
        if (folder / ".git").exists():
            return folder / DEFAULT_RUNS_DIR
    return Path(DEFAULT_RUNS_DIR)


def default_run_dir(study_name: str) -> Path:
    """``<runs_root()>/<study>``: where a run keeps results.csv, summary.json and (saved) its journal.

    Names that differ only in case (``S01`` and ``s01``) are one folder on Windows and macOS: a
    run would overwrite the other's results and share its journal. Such a name is refused (on
    every platform, so that a folder made on Linux still works when copied there).
    """
    root, name = runs_root(), safe_name(study_name)
    try:
        taken = [entry for entry in os.listdir(root) if entry.lower() == name.lower() and entry != name]
    except OSError:  # no runs folder yet
        taken = []
    if taken:
        raise ConfigError(
            f"study name {study_name!r}: its run folder {str(root / name)!r} differs only in case from the existing "
            f"{str(root / taken[0])!r}, which is the same folder on Windows and macOS; choose another study name or "
            "an output_dir", field="study_name")
    return root / name


def choose_storage(cfg: OptunaConfig, study_name: str, tmpdir: str) -> tuple[StorageLocation, Path | None]:
    """The study's storage and the run folder (None: no files are written).

    ``storage`` given: that storage (a journal's folder is created);
    ``save_study``: a journal in the run folder; otherwise a temporary journal
    in the run's private temp folder, deleted with it.
    """
    run_dir: Path | None = None
    if cfg.output_dir is not None or (cfg.save_study and cfg.storage is None):
        # results.csv/summary.json go to output_dir with any storage (a server's study included)
        run_dir = Path(cfg.output_dir) if cfg.output_dir is not None else default_run_dir(study_name)
        _check_writable_folder(run_dir)
    if cfg.storage is not None:
        given = StorageLocation.parse(cfg.storage)
        if given.path is None:
            return given, run_dir
        os.makedirs(os.path.dirname(os.path.abspath(given.path)), exist_ok=True)
        return (given if given.lock == "open" else StorageLocation.journal(given.path)), run_dir
    if cfg.save_study:
        assert run_dir is not None
        return StorageLocation.journal(run_dir / JOURNAL_NAME), run_dir
    return StorageLocation.journal(os.path.join(tmpdir, JOURNAL_NAME)), run_dir


def _check_writable_folder(folder: Path) -> None:
    """Create ``folder`` and prove a file can be written there now, not after the whole run."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".merlin-write-probe-"):
            pass
    except OSError as exc:
        raise ConfigError(f"output_dir {str(folder)!r} cannot be written: {exc.strerror or exc}; choose a folder "
                          "you can write to", field="output_dir") from None


def make_run_tmpdir() -> str:
    """The run's private temp folder (``merlin-run-*`` in ``tempfile.gettempdir()``, mode 0700), with its
    owner's pid and host recorded in ``owner.json``; first removes the folders of killed runs
    (:func:`remove_stale_run_tmpdirs`)."""
    remove_stale_run_tmpdirs()
    path = tempfile.mkdtemp(prefix=RUN_TMP_PREFIX)
    os.chmod(path, 0o700)
    owner = {"pid": os.getpid(), "host": host_id(), "created": time.time()}
    with open(os.path.join(path, RUN_TMP_OWNER), "w", encoding="utf-8") as fh:
        json.dump(owner, fh)
    return path


def remove_stale_run_tmpdirs(tmp: str | None = None) -> list[str]:
    """Remove the private temp folders left by runs whose process was killed (SIGKILL, OOM killer).

    A folder is removed only when it is ours (same user), older than ``STALE_TMP_MIN_AGE_SECONDS``,
    and its ``owner.json`` names a process *on this host* (:func:`host_id`) that no longer exists.
    A folder of a live process, of another host (a shared /tmp), or without an owner file (written
    by an older version, or just being created) is kept.  Returns the removed paths.
    """
    tmp = tmp or tempfile.gettempdir()
    removed: list[str] = []
    try:
        names = [n for n in os.listdir(tmp) if n.startswith(RUN_TMP_PREFIX)]
    except OSError:
        return removed
    here, now = host_id(), time.time()
    for name in names:
        path = os.path.join(tmp, name)
        try:
            st = os.lstat(path)
            if not os.path.isdir(path) or os.path.islink(path):
                continue
            if hasattr(os, "getuid") and st.st_uid != os.getuid():
                continue
            if now - st.st_mtime < STALE_TMP_MIN_AGE_SECONDS:
                continue
            with open(os.path.join(path, RUN_TMP_OWNER), encoding="utf-8") as fh:
                owner = json.load(fh)
            pid = owner.get("pid")
            if owner.get("host") != here or not isinstance(pid, int) or pid == os.getpid() or pid_alive(pid):
                continue
        except (OSError, ValueError, AttributeError):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def save_window_for_workers(prepared: PreparedData, tmpdir: str) -> dict[str, str]:
    """Worker processes on this machine read the validated window, not the CSV (private temp file)."""
    path = os.path.join(tmpdir, "prepared.npz")
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600))
    prepared.save(path)
    return {"path": path, "host": host_id()}


def check_strategy(strategy: Strategy, prepared: PreparedData, fixed_params: dict[str, Any],
                   max_seconds: float | None, *, warm: bool = False) -> float:
    """One timed backtest in the parent: a strategy that raises, returns malformed output or is too
    slow fails here with a StrategyError, before any worker starts.

    Returns its seconds; ``warm``: those of a second run on the same indicator cache (what a backtest
    costs inside a sweep's batch, which sizes the batches)."""
    label = f"strategy {strategy.id or strategy!r}"
    full = strategy.validate_params(dict(fixed_params))  # the schema's defaults for everything else
    starts = month_starts(prepared.time)
    cache = IndicatorCache()
    took = _test_backtest(strategy, prepared, full, label, cache, starts)
    if max_seconds is None or took <= max_seconds:
        return _warm_seconds(strategy, prepared, full, label, cache, starts) if warm else took
    # the first call may include one-off compilation (numba JIT): judge a second, warm run
    first = took
    took = _test_backtest(strategy, prepared, full, label, IndicatorCache(), starts)
    if took > max_seconds:
        raise StrategyError(
            f"{label} is too slow: one backtest of {prepared.n_bars} bars took {took:.1f} s "
            f"(first call {first:.1f} s), above max_backtest_seconds={max_seconds:g}, so the optimisation was not "
            f"started. Speed it up (compile the bar loop with numba, cache indicators with the IndicatorCache "
            f"passed to run(), test on a shorter window with start/end), or raise the limit: "
            f"OptimizationConfig(..., max_backtest_seconds={math.ceil(2 * max(took, max_seconds))}) "
            f"(None turns the check off)."
        )
    return took


def _warm_seconds(strategy: Strategy, prepared: PreparedData, full: dict[str, Any], label: str,
                  cache: IndicatorCache, starts: Any) -> float:
    """The fastest of up to three runs on a warm cache (a busy machine makes one run's time noisy)."""
    times = [_test_backtest(strategy, prepared, full, label, cache, starts)]
    while len(times) < 3 and sum(times) < 0.3:
        times.append(_test_backtest(strategy, prepared, full, label, cache, starts))
    return min(times)


def _test_backtest(strategy: Strategy, prepared: PreparedData, full: dict[str, Any], label: str,
                   cache: IndicatorCache, starts: Any) -> float:
    """Run the strategy once, check what it returned; the seconds it took (run + metrics)."""
    n_bars = prepared.n_bars
    t0 = time.perf_counter()
    try:
        output = strategy.run(prepared, full, cache)
    except MerlinError:
        raise
    except Exception as exc:
        raise StrategyError(
            f"{label} failed on a test backtest with {full}: "
            f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        ) from exc
    if not isinstance(output, StrategyOutput):
        raise StrategyError(
            f"{label}: run() returned {type(output).__name__}, not a StrategyOutput; return "
            "StrategyOutput(direction, entry_idx, exit_idx, entry_price, exit_price, size, net_pnl, profit_pct, "
            "balance, equity, initial_capital) or output_from_kernel(kernel_result, capital)"
        )
    try:
        output.check(n_bars, where=label)
        for name in ("direction", "entry_idx", "exit_idx"):
            if getattr(output, name).dtype.kind not in "iu":
                raise StrategyError(f"{label}: trade array {name!r} must hold integers, got dtype {getattr(output, name).dtype}")
    except StrategyError as exc:
        raise StrategyError(f"{exc} (malformed output of the test backtest with {full})") from None
    except Exception as exc:
        raise StrategyError(
            f"{label} returned a malformed StrategyOutput ({type(exc).__name__}: {exc}); every trade field "
            f"must be a 1-D numpy array with one value per trade and balance/equity one value per bar ({n_bars})"
        ) from exc
    try:
        compute_metrics(output, starts)
    except Exception as exc:
        raise StrategyError(
            f"{label}: the metrics of its test backtest could not be computed: {type(exc).__name__}: {exc}"
        ) from exc
    return time.perf_counter() - t0
