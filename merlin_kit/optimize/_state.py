"""Typed snapshots of a run: :class:`Progress` while it runs, :class:`RunSummary` once it has finished.

The CLI, the notebook monitor and the report all read these attributes; only
:meth:`to_dict` turns them into the JSON shape of ``summary.json`` and
``merlin-kit optimize --json`` (unchanged since 0.1).  Both still answer
``snapshot["key"]`` so that notebooks written against the 0.1 dicts keep
running; new code reads attributes.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from optuna.trial import FrozenTrial, TrialState

from ._attrs import OWNER_ATTR, counts_towards_budget
from ._budget import belongs_to_run, best_trial, trials_without_progress
from ._constraints import Constraint, trial_feasible
from ._objectives import Objective


class _Snapshot:
    """``to_dict()`` plus read-only dict-style access for code written against the 0.1 dicts."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)


@dataclass(frozen=True)
class WorkerProgress(_Snapshot):
    """One of the run's own worker processes (or its in-process worker) while the run goes on."""

    id: int
    pid: int | None
    alive: bool
    exitcode: int | None
    #: finished trials of this run that this worker ran
    trials: int
    #: a Dask worker's address for a cluster run's workers (None: a process or thread of this machine)
    address: str | None = None


@dataclass(frozen=True)
class Progress(_Snapshot):
    """Where a run stands, read from the study (so remote workers' trials count too)."""

    study_name: str
    #: ``trials``, ``time`` or ``convergence``
    budget_mode: str
    #: the budget in its own unit: trials, seconds, or trials without improvement
    budget: float
    #: how much of it is used, in the same unit
    done: float
    #: done / budget, 0..1
    fraction: float
    #: finished trials of this run (COMPLETE + PRUNED + FAIL; not the trials a stopping worker gave back)
    finished: int
    complete: int
    pruned: int
    failed: int
    running: int
    #: trials since the best value last improved (convergence budgets only)
    since_improvement: float | None
    best_value: float | None
    best_trial: int | None
    best_params: dict[str, Any]
    #: seconds since the run started
    elapsed: float
    trials_per_second: float
    #: trials budget: the trials left at the rate since the first finished trial (None before the second)
    eta_seconds: float | None
    workers: list[WorkerProgress]
    #: whether the run has finished (results ready)
    finished_run: bool
    #: one line per worker of this run, on any machine, that crashed: ``worker ID crashed: ERROR``
    worker_errors: list[str] = field(default_factory=list)

    @property
    def workers_alive(self) -> int:
        return sum(w.alive for w in self.workers)


@dataclass(frozen=True)
class WorkerReport(_Snapshot):
    """How one of the run's own workers ended."""

    id: int
    pid: int | None
    exitcode: int | None
    trials: int | None
    failed: int | None
    last_error: str | None
    traceback: str | None

    @property
    def had_trouble(self) -> bool:
        """A non-zero exit code or an error message: worth showing to the user."""
        return self.exitcode not in (0, None) or bool(self.last_error)


@dataclass(frozen=True)
class RunSummary(_Snapshot):
    """A finished run in numbers: the content of ``summary.json``."""

    method: str
    study_name: str
    strategy: str
    target: str
    direction: str
    budget_mode: str
    #: finished trials of this run (a resumed study's earlier trials are in ``study_trials``)
    total_trials: int
    completed_trials: int
    pruned_trials: int
    failed_trials: int
    study_trials: int
    best_trial_number: int | None
    #: the best target value (the post-hoc score for the ``score`` target)
    best_value: float | None
    #: the best trial's objective as the sampler saw it
    best_objective: float | None
    best_params: dict[str, Any]
    optimization_time_seconds: float
    trials_per_second: float
    workers: int
    worker_reports: list[WorkerReport]
    #: the study's storage with any password masked; None for a temporary journal
    storage: str | None
    multiprocess_mode: bool
    start_method: str | None
    sampler: str
    stop_reason: str
    #: things the user should know about the results, e.g. a saturated score (scoring.saturation_warnings)
    warnings: list[str] = field(default_factory=list)
    #: ``[metric, direction]`` per objective; the first is the primary one (best_*)
    objectives: list[list[str]] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)
    #: COMPLETE trials that satisfy every constraint
    feasible_trials: int | None = None
    #: the front, best primary objective first: ``{"trial", "values", "params"}`` each
    pareto_front: list[dict[str, Any]] = field(default_factory=list)


def steady_rate(finished: Sequence[FrozenTrial], now: float | None = None) -> float | None:
    """Trials/s from the run's first finished trial until now; ``None`` before the second one.

    The time before the first trial (process start-up, numba compiling the kernels on a fresh install) is
    not trial time: an ETA extrapolated from it showed minutes for a run of seconds.
    """
    ends = [t.datetime_complete.timestamp() for t in finished if t.datetime_complete is not None]
    if len(ends) < 2:
        return None
    span = (time.time() if now is None else now) - min(ends)
    return (len(ends) - 1) / span if span > 0 else None


def measure_progress(*, study_name: str, trials: Sequence[FrozenTrial], run_id: str, first_trial_number: int,
                     direction: str,
                     fixed_params: dict[str, Any], budget_mode: str, budget: float, elapsed: float,
                     workers: Sequence[tuple[int, int | None, bool, int | None, str | None]], finished_run: bool,
                     worker_errors: list[str], objectives: Sequence[Objective] = (),
                     constraints: Sequence[Constraint] = (), hv_reference: Sequence[float] | None = None) -> Progress:
    """A :class:`Progress` from the study's trials (``trials``: every trial of the study, read once).

    ``workers``: ``(id, pid, alive, exitcode, address)`` of the run's own workers.  ``objectives``
    (default: one in ``direction``), ``constraints``: the best is the best feasible first
    objective; the convergence count is the hypervolume's with several objectives.
    """
    objectives = list(objectives) or [Objective("target", "target", direction)]
    run_trials = [t for t in trials if belongs_to_run(t, run_id, first_trial_number)]
    finished = [t for t in run_trials if counts_towards_budget(t)]
    best = best_trial(finished, direction, (lambda t: trial_feasible(constraints, t)) if constraints else None)
    n_fin = len(finished)
    rate = n_fin / elapsed if elapsed > 0 else 0.0
    since: float | None = None
    if budget_mode == "trials":
        done = float(n_fin)
        steady = steady_rate(finished)
        eta = (budget - n_fin) / steady if steady else None
    elif budget_mode == "time":
        done = min(elapsed, budget)
        eta = max(0.0, budget - elapsed)
    else:
        # improvements count against the whole study's best (a resumed run must beat the earlier trials)
        done = since = float(trials_without_progress(
            [t for t in trials if counts_towards_budget(t)], run_id, first_trial_number, objectives, constraints,
            hv_reference))
        eta = None
    counts: dict[int, int] = {}
    for t in finished:
        owner = t.user_attrs.get(OWNER_ATTR) or {}
        if "worker" in owner:
            counts[owner["worker"]] = counts.get(owner["worker"], 0) + 1
    return Progress(
        study_name=study_name, budget_mode=budget_mode, budget=budget, done=done,
        fraction=min(1.0, done / budget) if budget else 0.0,
        finished=n_fin, complete=sum(t.state == TrialState.COMPLETE for t in finished),
        pruned=sum(t.state == TrialState.PRUNED for t in finished),
        failed=sum(t.state == TrialState.FAIL for t in finished),
        running=sum(t.state == TrialState.RUNNING for t in run_trials),
        since_improvement=since,
        best_value=None if best is None else best.values[0],
        best_trial=None if best is None else best.number,
        best_params={} if best is None else {**fixed_params, **best.params},
        elapsed=elapsed, trials_per_second=rate, eta_seconds=eta,
        workers=[WorkerProgress(wid, pid, alive, code, counts.get(wid, 0), where)
                 for wid, pid, alive, code, where in workers],
        finished_run=finished_run, worker_errors=worker_errors,
    )
