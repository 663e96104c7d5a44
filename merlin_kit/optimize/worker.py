"""The worker: the only code a child process runs.

:func:`run_worker` is a module-level function that receives nothing but a
storage location, a study name and a worker id, so it starts the same way under
``spawn``, ``forkserver`` and ``fork``, from a notebook, a script, papermill or
``merlin-kit worker`` on another machine.  Everything else (data, strategy,
search space, budget) is read from the study itself.

Budgets are enforced through the storage, never through process-local counters:

* ``trials``: the parent enqueues exactly ``n_trials`` WAITING trials and a
  worker only runs trials it has *claimed* from that queue (the storage's
  atomic WAITING -> RUNNING transition), so the study ends with exactly
  ``n_trials`` finished trials however many workers race for them;
* ``time``: no trial starts after the run's deadline (an absolute time stored
  in the study);
* ``convergence``: no trial starts once ``convergence_patience`` consecutive
  finished trials of this run have not improved on the best value.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, Trial, TrialState

from ..backtest import Backtester
from ..scoring import minmax_score
from .runconfig import RunConfig, load_run_config
from .storage import host_id, open_storage

log = logging.getLogger("merlin_kit.worker")

#: user attr keys written on trials and on the study
OWNER_ATTR = "merlin.owner"
METRICS_ATTR = "metrics"
ERROR_ATTR = "error"
TRACEBACK_ATTR = "traceback"
PRUNE_REASON_ATTR = "prune_reason"
STOP_ATTR = "merlin.stop"
WORKER_STATUS_PREFIX = "merlin.worker."
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
#: how long a trials-mode worker waits for the queue to be filled before giving up
QUEUE_WAIT_SECONDS = 10.0


def make_sampler(cfg: RunConfig, worker_id: int) -> optuna.samplers.BaseSampler:
    """The run's sampler; each worker gets ``seed + worker_id`` so workers never duplicate each other."""
    o = cfg.optuna
    seed = None if o.seed is None else o.seed + worker_id
    if o.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(
        seed=seed, multivariate=True, constant_liar=True, n_startup_trials=o.n_startup_trials
    )


def make_pruner(cfg: RunConfig) -> optuna.pruners.BasePruner:
    o = cfg.optuna
    if o.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=o.pruner_warmup_trials, n_warmup_steps=0)
    if o.pruner == "percentile":
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=o.pruner_warmup_trials, n_warmup_steps=0)
    if o.pruner == "patient":
        inner = optuna.pruners.MedianPruner(n_startup_trials=o.pruner_warmup_trials, n_warmup_steps=0)
        return optuna.pruners.PatientPruner(inner, patience=o.pruner_patience)
    return optuna.pruners.NopPruner()


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this machine (signal 0 checks without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_better(value: float, best: float | None, direction: str) -> bool:
    if best is None:
        return True
    return value > best if direction == "maximize" else value < best


def trials_since_improvement(trials: list[FrozenTrial], first_run_number: int, direction: str) -> int:
    """Finished trials of this run (numbers >= first_run_number) since the best value last improved."""
    best: float | None = None
    since = 0
    for t in sorted(trials, key=lambda t: t.number):
        if t.state not in FINISHED_STATES:
            continue
        improved = t.state == TrialState.COMPLETE and t.value is not None and is_better(t.value, best, direction)
        if improved:
            best = t.value
        if t.number >= first_run_number:
            since = 0 if improved else since + 1
    return since


@dataclass
class WorkerStats:
    trials: int = 0
    failed: int = 0
    last_error: str | None = None


class TrialRunner:
    """Evaluates one claimed trial: suggest, backtest, score, store metrics, tell."""

    def __init__(self, study: optuna.Study, cfg: RunConfig, worker_id: int, data_path: str | None = None) -> None:
        self.study = study
        self.cfg = cfg
        self.worker_id = worker_id
        self.backtester = Backtester(cfg.load_strategy(), cfg.load_prepared(data_path))
        self.owner = {"worker": worker_id, "pid": os.getpid(), "host": host_id(), "run": cfg.run_id}
        self.stats = WorkerStats()

    def suggest(self, trial: Trial) -> dict[str, Any]:
        params: dict[str, Any] = {}
        for dim in self.cfg.space:
            if dim.kind == "categorical":
                params[dim.name] = trial.suggest_categorical(dim.name, list(dim.choices or ()))
            elif dim.kind == "int":
                params[dim.name] = trial.suggest_int(dim.name, int(dim.low), int(dim.high), step=int(dim.step or 1))
            else:
                params[dim.name] = trial.suggest_float(dim.name, dim.low, dim.high, step=dim.step)
        return params

    def evaluate(self, trial: Trial) -> None:
        trial.set_user_attr(OWNER_ATTR, self.owner)
        self.stats.trials += 1
        try:
            params = {**self.cfg.fixed_params, **self.suggest(trial)}
            metrics, _, _ = self.backtester.run(params)
            metrics = {**metrics, "score": minmax_score(metrics, self.cfg.score)}
        except Exception as exc:  # a strategy error must fail this trial only, never the worker
            self._fail(trial, exc)
            return
        trial.set_user_attr(METRICS_ATTR, metrics)
        value = metrics[self.cfg.metric]
        if value is None:
            self._prune(trial, f"target metric {self.cfg.metric!r} is undefined for this result (e.g. too few trades)")
            return
        value = float(value)
        if not math.isfinite(value):
            self.stats.failed += 1
            trial.set_user_attr(ERROR_ATTR, f"objective is {value}")
            self.study.tell(trial, state=TrialState.FAIL)
            return
        min_profit = self.cfg.min_profit
        if min_profit is not None and metrics["net_profit_pct"] < min_profit:
            trial.report(value, 0)
            self._prune(trial, f"net profit {metrics['net_profit_pct']:.4g}% is below the minimum {min_profit}%")
            return
        if self.cfg.optuna.pruner != "none":
            trial.report(value, 0)
            if trial.should_prune():
                self._prune(trial, f"pruned by the {self.cfg.optuna.pruner} pruner")
                return
        self.study.tell(trial, value)

    def _prune(self, trial: Trial, reason: str) -> None:
        trial.set_user_attr(PRUNE_REASON_ATTR, reason)
        self.study.tell(trial, state=TrialState.PRUNED)

    def _fail(self, trial: Trial, exc: BaseException) -> None:
        tb = traceback.format_exc()
        log.error("worker %s: trial %s failed:\n%s", self.worker_id, trial.number, tb)
        self.stats.failed += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        trial.set_user_attr(ERROR_ATTR, self.stats.last_error)
        trial.set_user_attr(TRACEBACK_ATTR, tb[-4000:])
        self.study.tell(trial, state=TrialState.FAIL)


class WorkerLoop:
    """Claims and runs trials until the run's global budget, a stop request or the parent's death ends it."""

    def __init__(self, location: str, study_name: str, worker_id: int, *, parent_pid: int | None = None,
                 stop_event: threading.Event | None = None, data_path: str | None = None) -> None:
        self.storage = open_storage(location)
        self.study_id = self.storage.get_study_id_from_name(study_name)
        self.cfg = load_run_config(self.storage, self.study_id)
        self.study = optuna.load_study(
            study_name=study_name, storage=self.storage,
            sampler=make_sampler(self.cfg, worker_id), pruner=make_pruner(self.cfg),
        )
        self.worker_id = worker_id
        self.parent_pid = parent_pid
        self.stop_event = stop_event
        self.runner = TrialRunner(self.study, self.cfg, worker_id, data_path)
        self.stop_reason = ""

    def should_stop(self) -> bool:
        if self.stop_event is not None and self.stop_event.is_set():
            self.stop_reason = "stop requested"
            return True
        if self.parent_pid is not None and not pid_alive(self.parent_pid):
            self.stop_reason = "parent process ended"
            return True
        if self.storage.get_study_user_attrs(self.study_id).get(STOP_ATTR) == self.cfg.run_id:
            self.stop_reason = "stop requested"
            return True
        o = self.cfg.optuna
        if o.budget_mode == "time" and time.time() >= self.cfg.deadline:
            self.stop_reason = "time limit reached"
            return True
        if o.budget_mode == "convergence":
            trials = self.storage.get_all_trials(self.study_id, deepcopy=False, states=FINISHED_STATES)
            since = trials_since_improvement(trials, self.cfg.first_trial_number, self.cfg.direction)
            if since >= (o.convergence_patience or 0):
                self.stop_reason = f"converged: no improvement in {since} trials"
                return True
        return False

    def claim(self) -> Trial | None:
        """The next trial to run: a claimed WAITING trial (trials budget) or a new one."""
        if self.cfg.optuna.budget_mode != "trials":
            return self.study.ask()
        waited_since = time.monotonic()
        while True:
            waiting = self.storage.get_all_trials(self.study_id, deepcopy=False, states=(TrialState.WAITING,))
            for frozen in waiting:
                try:
                    claimed = self.storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING)
                except UpdateFinishedTrialError:
                    continue
                if claimed:
                    # What Study.ask does after popping a waiting trial: drop the per-trial cache so
                    # the sampler sees the trials other workers finished meanwhile.
                    self.study._thread_local.cached_all_trials = None
                    return Trial(self.study, frozen._trial_id)
            if not waiting and self._budget_fully_queued():
                self.stop_reason = "trial budget reached"
                return None
            if time.monotonic() - waited_since > QUEUE_WAIT_SECONDS:
                self.stop_reason = "no queued trial appeared"
                return None
            time.sleep(0.01)

    def _budget_fully_queued(self) -> bool:
        return bool(self.storage.get_study_user_attrs(self.study_id).get(f"merlin.queued.{self.cfg.run_id}"))

    def run(self) -> WorkerStats:
        log.info("worker %s (pid %s) joined study %r", self.worker_id, os.getpid(), self.study.study_name)
        while not self.should_stop():
            trial = self.claim()
            if trial is None:
                break
            self.runner.evaluate(trial)
        log.info("worker %s finished %s trials: %s", self.worker_id, self.runner.stats.trials, self.stop_reason)
        self._report_status("ok")
        return self.runner.stats

    def _report_status(self, status: str, error: str | None = None) -> None:
        stats = self.runner.stats
        self.storage.set_study_user_attr(
            self.study_id,
            f"{WORKER_STATUS_PREFIX}{self.cfg.run_id}.{self.worker_id}",
            {"status": status, "pid": os.getpid(), "host": host_id(), "trials": stats.trials,
             "failed": stats.failed, "last_error": error or stats.last_error, "stop_reason": self.stop_reason},
        )


def report_worker_crash(location: str, study_name: str, worker_id: int, tb: str) -> None:
    """Best effort: record a worker's fatal traceback in the study so the parent can show it."""
    try:
        storage = open_storage(location)
        study_id = storage.get_study_id_from_name(study_name)
        cfg_run = load_run_config(storage, study_id).run_id
        storage.set_study_user_attr(
            study_id, f"{WORKER_STATUS_PREFIX}{cfg_run}.{worker_id}",
            {"status": "crashed", "pid": os.getpid(), "host": host_id(), "last_error": tb.strip().splitlines()[-1],
             "traceback": tb[-8000:]},
        )
    except Exception:  # the storage itself may be what failed; the traceback is on stderr anyway
        log.exception("worker %s could not record its crash in the study", worker_id)


def run_worker(location: str, study_name: str, worker_id: int, parent_pid: int | None = None,
               data_path: str | None = None) -> None:
    """Process entry point: join the study and run trials until the global budget is spent.

    Exits with code 1 (after recording the traceback in the study) if the
    worker cannot start or crashes; a failing *trial* never ends the worker.
    """
    _configure_child_logging(worker_id)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        WorkerLoop(location, study_name, worker_id, parent_pid=parent_pid, data_path=data_path).run()
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:
        tb = traceback.format_exc()
        log.error("worker %s crashed:\n%s", worker_id, tb)
        report_worker_crash(location, study_name, worker_id, tb)
        sys.exit(1)
    if multiprocessing.parent_process() is not None:
        # Everything is in the storage already; skipping interpreter teardown (numba, LLVM,
        # pandas) saves ~0.4 s per worker at the end of every run.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def _configure_child_logging(worker_id: int) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.WARNING, stream=sys.stderr,
            format=f"%(asctime)s merlin-kit worker {worker_id} [%(levelname)s] %(message)s",
        )

