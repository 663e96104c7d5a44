"""The names under which a run writes into its Optuna study, in one place.

The parent, the workers, the notebook and the dashboard all read the same
study, so every key that one of them writes and another reads is defined here
(and only here): a renamed key cannot silently split the readers from the
writers.
"""

from __future__ import annotations

from optuna.trial import FrozenTrial, TrialState

# -- trial user attrs ----------------------------------------------------------
#: ``{"worker", "pid", "host", "run"}`` of the process that runs the trial (liveness checks, results)
OWNER_ATTR = "merlin.owner"
#: every metric of the trial's backtest (the results are rebuilt from it)
METRICS_ATTR = "metrics"
ERROR_ATTR = "error"
TRACEBACK_ATTR = "traceback"
PRUNE_REASON_ATTR = "prune_reason"
#: journal storages' heartbeat of a long trial (RDB storages use Optuna's heartbeat table)
BEAT_ATTR = "merlin.beat"
#: set (to the signal's name) on a trial a stopping worker gave back unfinished: it is FAIL in Optuna's
#: eyes, but it was never evaluated, so it counts towards no budget and is no result (see ``_worker``)
RETURNED_ATTR = "merlin.returned"

# -- trial system attrs of a sweep (:mod:`._sweep`; system attrs, so user attrs match an ask/tell trial) --
#: a sweep's batch ticket: ``{"run": RUN_ID, "batch": K, "replaces": TRIAL_ID | None}``; the ticket trial
#: becomes the batch's last point when the batch is written
SWEEP_TICKET_ATTR = "merlin.sweep.ticket"
#: the stable index of a sweep's point (grid: its index in the grid; random/qmc: its place in the sequence)
SWEEP_POINT_ATTR = "merlin.sweep.point"

# -- study user attrs -----------------------------------------------------------
#: the run's configuration (:class:`~merlin_kit.optimize._runconfig.RunConfig` as JSON)
CONFIG_ATTR = "merlin.config"
#: set to a run id: every worker of that run stops before its next trial
STOP_ATTR = "merlin.stop"
WORKER_STATUS_PREFIX = "merlin.worker."
#: the run that holds the study: ``{"run", "host", "pid", "started_at", "renewed_at", "released"}``
LEASE_ATTR = "merlin.lease"
#: the study that comes after this one for the run's workers (a walk-forward's next window):
#: ``{"run": RUN_ID, "state": "pending" | "next" | "end", "study": NAME | None}``, see :mod:`._chain`
NEXT_ATTR = "merlin.next"
#: marks a queued trial that an earlier run left behind and this run retired unrun (not a result)
CANCELLED_ATTR = "merlin.cancelled"

#: the trial states that count towards a budget and appear in the results
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


def counts_towards_budget(trial: FrozenTrial) -> bool:
    """A finished trial that was evaluated: one of FINISHED_STATES, not given back by a stopping worker
    (RETURNED_ATTR), not a leftover queued trial retired unrun (CANCELLED_ATTR) and not a sweep's lost
    batch ticket (its batch is re-done)."""
    return (trial.state in FINISHED_STATES and RETURNED_ATTR not in trial.user_attrs
            and CANCELLED_ATTR not in trial.user_attrs and not is_lost_ticket(trial))


def is_lost_ticket(trial: FrozenTrial) -> bool:
    """A sweep's batch ticket that never became a point: its worker died (it was reaped) or gave it back."""
    return SWEEP_TICKET_ATTR in trial.system_attrs and SWEEP_POINT_ATTR not in trial.system_attrs


def worker_status_attr(run_id: str, worker_id: int | str) -> str:
    """Study user attr where worker ``worker_id`` of run ``run_id`` reports how it ended."""
    return f"{WORKER_STATUS_PREFIX}{run_id}.{worker_id}"


def worker_status_prefix(run_id: str) -> str:
    """The prefix shared by every :func:`worker_status_attr` of one run."""
    return f"{WORKER_STATUS_PREFIX}{run_id}."


def converged_attr(run_id: str) -> str:
    """Study user attr set by the first worker that sees the run converge (every worker then stops)."""
    return f"merlin.converged.{run_id}"


def queued_attr(run_id: str) -> str:
    """Study user attr set once the parent has queued the run's whole trial budget."""
    return f"merlin.queued.{run_id}"
