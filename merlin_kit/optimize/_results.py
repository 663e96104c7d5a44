"""A finished run's results, rebuilt from the study alone: one result per trial, sorted, and the summary.

Everything a worker learned is in its trials' user attrs (parameters, every
metric, errors), so results are the same whichever process, machine or run
produced the trials.  The composite score is computed here, post hoc, over all
complete trials (its min-max or percentile bounds need the whole population).
"""

from __future__ import annotations

import logging
import math
import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from optuna.trial import FrozenTrial, TrialState

from ..backtest import BacktestResult
from ..errors import OptimizationError
from ..scoring import ScoreConfig, saturation_warnings, score_all
from ._attrs import (
    ERROR_ATTR, METRICS_ATTR, OWNER_ATTR, PRUNE_REASON_ATTR, TRACEBACK_ATTR, counts_towards_budget,
)
from ._budget import belongs_to_run
from ._constraints import Constraint, total_violation, trial_violations
from ._objectives import Objective, losses, pareto_indices
from ._state import RunSummary, WorkerReport

if TYPE_CHECKING:
    from ._engine import OptimizationRun

#: how a worker that the run's own stop ended exits: killed, or its SIGTERM handler's 128 + SIGTERM
#: (Windows has no SIGKILL: Process.kill() is a TerminateProcess there, seen as -SIGTERM)
STOPPED_EXIT_CODES = (-signal.SIGTERM, -getattr(signal, "SIGKILL", signal.SIGTERM), 128 + signal.SIGTERM)
log = logging.getLogger("merlin_kit.optimize")
NO_TRACEBACK_HINT = (
    "not recorded: the workers died before joining the study (see their stderr). In a script, start the "
    "optimisation under `if __name__ == \"__main__\":` - spawn and forkserver workers re-import the main module."
)


@dataclass
class OptimizationResult:
    """One trial rebuilt from storage: parameters (fixed ones included), every metric, scores."""

    trial_number: int
    state: str
    params: dict[str, Any]
    metrics: dict[str, Any]
    objective: float | None
    score: float | None
    worker: int | None = None
    error: str | None = None
    prune_reason: str | None = None
    run_id: str | None = None
    #: every objective's value as the sampler saw it (COMPLETE trials; ``objective`` is the first)
    values: list[float] | None = None
    #: one violation per constraint, computed from the stored metrics (<= 0: satisfied)
    constraint_values: list[float] = field(default_factory=list)
    #: sum of the positive violations (0: feasible)
    violation: float = 0.0
    feasible: bool = True
    #: on the Pareto front: non-dominated among the feasible COMPLETE trials (one objective: the best value)
    pareto: bool = False

    run: "OptimizationRun | None" = field(default=None, repr=False, compare=False)

    @property
    def note(self) -> str | None:
        """Why the trial failed or was pruned."""
        return self.error or self.prune_reason

    def target_value(self, metric: str) -> float | None:
        """The value the run ranks by: the post-hoc score for the ``score`` target, else the objective."""
        value = self.score if metric == "score" else self.objective
        if value is None and self.metrics.get(metric) is not None:
            value = self.metrics[metric]
        return value

    def backtest(self) -> BacktestResult:
        """Re-run this result's parameters as a full backtest (trades, curves) on its run's window."""
        if self.run is None:
            raise ValueError("this result is not attached to a run; use run.backtest(result)")
        return self.run.backtest(self)

    def monte_carlo(self, n: int = 1000, seed: int | None = None) -> Any:
        """Bootstrap of this result's trades (``n`` paths): a MonteCarloResult of max drawdown and final return."""
        from ..robustness import monte_carlo
        return monte_carlo(self.backtest(), n=n, seed=seed)


def build_results(trials: Iterable[FrozenTrial], *, fixed_params: dict[str, Any], score: ScoreConfig, metric: str,
                  direction: str, run: "OptimizationRun | None" = None, objectives: Sequence[Objective] = (),
                  constraints: Sequence[Constraint] = ()) -> list[OptimizationResult]:
    """Every finished trial as a result, scored post hoc, filtered by ``min_score`` and sorted best first.

    Queued trials that a run retired unrun (``merlin.cancelled``) are not results.  With
    ``constraints`` each result carries its violations (from its stored metrics) and
    ``feasible``; ``pareto`` marks the front (:func:`mark_front`); see :func:`sort_results`.
    """
    results: list[OptimizationResult] = []
    for t in trials:
        if not counts_towards_budget(t):
            continue
        owner = t.user_attrs.get(OWNER_ATTR) or {}
        results.append(OptimizationResult(
            trial_number=t.number,
            state=t.state.name,
            params={**fixed_params, **t.params},
            metrics=dict(t.user_attrs.get(METRICS_ATTR) or {}),
            objective=t.values[0] if t.state == TrialState.COMPLETE and t.values else None,
            score=None,
            worker=owner.get("worker"),
            error=t.user_attrs.get(ERROR_ATTR),
            prune_reason=t.user_attrs.get(PRUNE_REASON_ATTR),
            run_id=owner.get("run"),
            values=list(t.values) if t.state == TrialState.COMPLETE and t.values else None,
            run=run,
        ))
        if constraints:
            r = results[-1]
            r.constraint_values = trial_violations(constraints, t)
            r.violation = total_violation(r.constraint_values)
            r.feasible = r.violation == 0
    complete = [r for r in results if r.state == "COMPLETE" and r.metrics]
    for r, s in zip(complete, score_all([r.metrics for r in complete], score)):
        r.score = s
    if score.min_score is not None:
        results = [r for r in results if r.score is None or r.score >= score.min_score]
    mark_front(results, list(objectives) or [Objective(metric, metric, direction)], metric)
    return sort_results(results, metric, direction)


def _primary(r: OptimizationResult, metric: str, several: bool) -> float | None:
    """The value a result ranks by: the first objective as told (several), else the target (post-hoc score)."""
    return r.values[0] if several and r.values else r.target_value(metric)


def mark_front(results: list[OptimizationResult], objectives: Sequence[Objective], metric: str) -> None:
    """Set ``pareto`` on the non-dominated feasible COMPLETE results (one objective: those with the best value)."""
    several = len(objectives) > 1
    pool = [r for r in results if r.state == "COMPLETE" and r.feasible and (r.values if several else
                                                                            _primary(r, metric, False) is not None)]
    points = [losses(r.values if several else [_primary(r, metric, False)], objectives) for r in pool]
    for i in pareto_indices(points):
        pool[i].pareto = True


def sort_results(results: Iterable[OptimizationResult], metric: str, direction: str) -> list[OptimizationResult]:
    """Best first: the Pareto front, then the other feasible COMPLETE results, by the primary objective (the
    post-hoc score for the ``score`` target of a one-objective run); then infeasible COMPLETE results, least
    violation first; then PRUNED, then FAIL.  So ``results[0]`` (``run.best``) is the front's best by the
    primary objective, or, when no trial is feasible, the complete trial that violates its constraints least."""
    results = list(results)
    several = any(r.values and len(r.values) > 1 for r in results)
    sign = -1.0 if direction == "maximize" else 1.0

    def key(r: OptimizationResult) -> tuple[int, float, float, int]:
        value = _primary(r, metric, several)
        v = sign * value if value is not None and math.isfinite(value) else math.inf
        if r.state == "COMPLETE":
            group = (0 if r.pareto else 1) if r.feasible else 2
        else:
            group = {"PRUNED": 3, "FAIL": 4}.get(r.state, 5)
        return group, r.violation if group == 2 else 0.0, v, r.trial_number

    return sorted(results, key=key)


def build_summary(run: "OptimizationRun", trials: Sequence[FrozenTrial], worker_statuses: dict[str, Any],
                  elapsed: float, stop_reason: str) -> RunSummary:
    """The run's :class:`RunSummary` (``trials``: every trial of the study; ``worker_statuses``: the
    status attrs of this run's workers, by worker id)."""
    run_trials = run_trials_of(trials, run.run_id, run.run_config.first_trial_number)
    best = run.best
    reports = []
    for w in run.workers:
        status = worker_statuses.get(str(w.worker_id), {})
        reports.append(WorkerReport(
            id=w.worker_id, pid=w.pid, exitcode=w.exitcode,
            trials=status.get("trials"), failed=status.get("failed"),
            last_error=status.get("last_error") or (w.error.strip().splitlines()[-1] if w.error else None),
            traceback=status.get("traceback") or w.error,
        ))
    n_workers = run.opt.worker_processes
    warnings = saturation_warnings([r.metrics for r in run.results if r.state == "COMPLETE" and r.metrics],
                                   run.score_config)
    for line in warnings:
        log.warning("%s", line)
    return RunSummary(
        method="optuna",
        study_name=run.study_name,
        strategy=run.strategy.id,
        target=run.config.target,
        direction=run.direction,
        budget_mode=run.config.budget_mode,
        total_trials=len(run_trials),
        completed_trials=sum(t.state == TrialState.COMPLETE for t in run_trials),
        pruned_trials=sum(t.state == TrialState.PRUNED for t in run_trials),
        failed_trials=sum(t.state == TrialState.FAIL for t in run_trials),
        study_trials=sum(counts_towards_budget(t) for t in trials),
        best_trial_number=None if best is None else best.trial_number,
        best_value=None if best is None else best.target_value(run.metric),
        best_objective=None if best is None else best.objective,
        best_params={} if best is None else best.params,
        optimization_time_seconds=elapsed,
        trials_per_second=len(run_trials) / elapsed if elapsed > 0 else 0.0,
        workers=max(1, n_workers, len(run.workers)) if run.workers else 0,  # a cluster: one per Dask task
        worker_reports=reports,
        storage=None if run.temporary_storage else run.storage_location.display,
        multiprocess_mode=n_workers > 1,
        start_method=run.opt.start_method if n_workers > 1 else None,
        sampler=run.config.sampler,
        stop_reason=stop_reason or natural_stop_reason(run.config, len(run_trials)),
        warnings=warnings,
        objectives=[[o.metric, o.direction] for o in run.objectives],
        constraints=[c.text for c in run.constraints],
        feasible_trials=sum(r.state == "COMPLETE" and r.feasible for r in run.results),
        pareto_front=[{"trial": r.trial_number, "values": r.values, "params": r.params}
                      for r in run.results if r.pareto],
    )


def run_trials_of(trials: Iterable[FrozenTrial], run_id: str, first_trial_number: int) -> list[FrozenTrial]:
    """The finished trials that run ``run_id`` ran (see :func:`~._budget.belongs_to_run`)."""
    return [t for t in trials if counts_towards_budget(t) and belongs_to_run(t, run_id, first_trial_number)]


def natural_stop_reason(cfg: Any, n_finished: int) -> str:
    """Why a run that nobody stopped ended, in its budget's own words."""
    if cfg.budget_mode == "trials" and n_finished < (cfg.n_trials or 0):
        return "workers ended before the budget was reached (see worker_reports)"
    if cfg.budget_mode == "convergence":
        return f"converged: no improvement in {cfg.convergence_patience} trials"
    if cfg.budget_mode == "time":
        return "time limit reached"
    return "budget reached"


def check_outcome(summary: RunSummary, run_trials: Sequence[FrozenTrial], *, stopped: bool = False) -> None:
    """Raise :class:`OptimizationError` when the run produced nothing usable (every worker or trial failed).

    ``stopped``: the user stopped the run; workers ended by that stop did not fail.
    """
    reports = summary.worker_reports
    failed_workers = [w for w in reports if w.exitcode not in (0, None)]
    if reports and len(failed_workers) == len(reports) and summary.completed_trials == 0 and not (
            stopped and all(w.exitcode in STOPPED_EXIT_CODES and not w.last_error
                            for w in failed_workers)):
        first_tb = next((w.traceback for w in failed_workers if w.traceback), None)
        raise OptimizationError(
            f"every worker failed ({', '.join('worker %s: exit %s' % (w.id, w.exitcode) for w in failed_workers)}); "
            f"first traceback:\n{first_tb or NO_TRACEBACK_HINT}"
        )
    finished = [t for t in run_trials if counts_towards_budget(t)]
    if finished and summary.completed_trials == 0 and all(t.state == TrialState.FAIL for t in finished):
        first_fail = next(t for t in finished if t.state == TrialState.FAIL)
        raise OptimizationError(
            f"all {len(finished)} trials failed; first failure (trial {first_fail.number}): "
            f"{first_fail.user_attrs.get(ERROR_ATTR)}\n{first_fail.user_attrs.get(TRACEBACK_ATTR, '')}"
        )


def pareto_points(trials: Iterable[FrozenTrial], objectives: Sequence[Objective],
                  constraints: Sequence[Constraint] = ()) -> list[dict[str, Any]]:
    """What a Pareto chart draws, live or finished: each COMPLETE trial's ``trial``, ``values``,
    ``feasible``, ``violation`` and ``pareto`` (non-dominated among the feasible ones)."""
    points = []
    for t in trials:
        if t.state != TrialState.COMPLETE or not t.values or len(t.values) != len(objectives):
            continue
        violation = total_violation(trial_violations(constraints, t)) if constraints else 0.0
        points.append({"trial": t.number, "values": list(t.values), "feasible": violation == 0,
                       "violation": violation, "pareto": False})
    pool = [p for p in points if p["feasible"] and all(math.isfinite(v) for v in p["values"])]
    for i in pareto_indices([losses(p["values"], objectives) for p in pool]):
        pool[i]["pareto"] = True
    return points
