"""Global budgets, enforced through the storage and never through process-local counters.

* ``trials``: the parent queues exactly ``n_trials`` WAITING trials
  (:class:`TrialQueue`) and a worker only runs a trial it has *claimed* from
  that queue (:func:`claim_queued_trial`: the storage's atomic WAITING ->
  RUNNING transition), so the study ends with exactly ``n_trials`` finished
  trials however many workers, on however many machines, race for them;
* ``time``: no trial starts after the run's deadline (an absolute time stored
  in the study);
* ``convergence``: no trial starts once ``convergence_patience`` consecutive
  finished trials of this run have not improved on the best feasible value
  (:func:`trials_since_improvement`), or, with several objectives, not grown
  the feasible front's hypervolume (:func:`trials_without_progress`).

The parent (which fills the queue and watches) and the workers (which claim
and count) both use this module, so both read the budget the same way.
"""

from __future__ import annotations

import math
import threading
from typing import Callable, Sequence

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, Trial, TrialState

from ._attrs import CANCELLED_ATTR, ERROR_ATTR, OWNER_ATTR, counts_towards_budget, queued_attr
from ._constraints import Constraint, trial_feasible
from ._objectives import Objective, losses, trials_since_hv_gain

#: WAITING trials kept queued ahead of the workers on a database (at least; more at high trial rates)
RDB_QUEUE_WINDOW = 16
#: the same on a journal, where a queued trial is cheap but 100,000 of them are not (seconds to write,
#: and every storage read and the dashboard would walk them)
JOURNAL_QUEUE_WINDOW = 256


def is_better(value: float, best: float | None, direction: str) -> bool:
    if best is None:
        return True
    return value > best if direction == "maximize" else value < best


def best_trial(trials: list[FrozenTrial], direction: str,
               feasible: Callable[[FrozenTrial], bool] | None = None) -> FrozenTrial | None:
    """The COMPLETE (and ``feasible``) trial with the best (first) value, the earliest on ties."""
    best = None
    for t in trials:
        if t.state == TrialState.COMPLETE and t.values and (feasible is None or feasible(t)) and (
                best is None or is_better(t.values[0], best.values[0], direction)):
            best = t
    return best


def belongs_to_run(t: FrozenTrial, run_id: str, first_trial_number: int) -> bool:
    """Whether run ``run_id`` ran this trial (and so counts it in its budget, progress and summary).

    A worker records its run in the trial's owner attr as soon as it claims the
    trial, so a trial queued by an earlier run and finished by this one counts
    here; a trial without an owner (its worker died at once) counts for the
    run that created it, judged by its number.  Leftover queued trials that a
    run retired unrun count for nobody.
    """
    owner = t.user_attrs.get(OWNER_ATTR)
    if owner:
        return owner.get("run") == run_id
    return t.number >= first_trial_number and not t.user_attrs.get(CANCELLED_ATTR)


def trials_since_improvement(trials: list[FrozenTrial], run_id: str, first_trial_number: int, direction: str,
                             feasible: Callable[[FrozenTrial], bool] | None = None) -> int:
    """Finished trials of this run since the best (``feasible``) value of the whole study last improved."""
    best: float | None = None
    since = 0
    for t in sorted(trials, key=lambda t: t.number):
        if not counts_towards_budget(t):
            continue
        improved = (t.state == TrialState.COMPLETE and bool(t.values) and (feasible is None or feasible(t))
                    and is_better(t.values[0], best, direction))
        if improved:
            best = t.values[0]
        if belongs_to_run(t, run_id, first_trial_number):
            since = 0 if improved else since + 1
    return since


def trials_without_progress(trials: list[FrozenTrial], run_id: str, first_trial_number: int,
                            objectives: Sequence[Objective], constraints: Sequence[Constraint] = (),
                            hv_reference: Sequence[float] | None = None) -> int:
    """The convergence count: trials of this run since the study last made progress.

    One objective: since the best feasible value improved.  Several: since the
    hypervolume of the study's feasible front grew (:func:`~._objectives.trials_since_hv_gain`;
    ``hv_reference`` in the objectives' own units).  Read from the storage by every
    worker alike, so the count is global across workers and machines.
    """
    feasible = (lambda t: trial_feasible(constraints, t)) if constraints else None
    if len(objectives) == 1:
        return trials_since_improvement(trials, run_id, first_trial_number, objectives[0].direction, feasible)
    entries = []
    for t in sorted(trials, key=lambda t: t.number):
        if not counts_towards_budget(t):
            continue
        ok = t.state == TrialState.COMPLETE and bool(t.values) and (feasible is None or feasible(t))
        entries.append((belongs_to_run(t, run_id, first_trial_number), ok,
                        losses(t.values, objectives) if ok else None))
    reference = None if hv_reference is None else losses(hv_reference, objectives)
    return trials_since_hv_gain(entries, reference)[0]


def waiting_trials(storage: BaseStorage, study_id: int) -> list[FrozenTrial]:
    return storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.WAITING,))


class TrialQueue:
    """The parent's side of an exact trial budget: queue ``n_trials`` WAITING trials, a window at a time.

    Optuna re-reads every unfinished trial of a study from the server on each
    trial, so a queue of the whole budget would make every trial cost
    O(budget) on PostgreSQL/MySQL (and 100,000 queued journal trials take
    seconds to write): :meth:`top_up` keeps a window ahead of the workers,
    wider at high trial rates.  Called by the monitor and by an in-process
    worker that finds the queue empty (hence the lock).
    """

    def __init__(self, study: optuna.Study, run_id: str, *, rdb: bool, poll_seconds: float) -> None:
        self.study = study
        self.storage = study._storage
        self.study_id = study._study_id
        self.run_id = run_id
        self.least = RDB_QUEUE_WINDOW if rdb else JOURNAL_QUEUE_WINDOW
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._to_enqueue = 0
        self.rate = 0.0  # trials/s, set by the monitor: sizes the window

    def fill(self, n_trials: int) -> None:
        """Queue the run's budget (the first window now).

        Trials that an earlier, stopped or killed run queued but never ran are
        reused: they count towards this budget (whoever claims one records this
        run as its owner); any beyond the budget are retired unrun (FAIL with
        the ``merlin.cancelled`` mark, which results and counts leave out).
        """
        waiting = waiting_trials(self.storage, self.study_id)
        for extra in waiting[n_trials:]:  # a stopped earlier run left more than needed: retire them unrun
            self.storage.set_trial_user_attr(extra._trial_id, CANCELLED_ATTR, self.run_id)
            self.storage.set_trial_user_attr(extra._trial_id, ERROR_ATTR, "cancelled: queued by an earlier run")
            self.storage.set_trial_state_values(extra._trial_id, state=TrialState.FAIL)
        with self._lock:
            self._to_enqueue = max(0, n_trials - len(waiting))
            if self._to_enqueue == 0:  # the leftovers are the whole budget: nothing to queue, and workers
                # must know it (else one that finds the queue empty waits for a trial that never comes)
                self.storage.set_study_user_attr(self.study_id, queued_attr(self.run_id), True)
        self.top_up(min(len(waiting), n_trials))

    def top_up(self, waiting: int | None = None) -> None:
        with self._lock:
            if self._to_enqueue <= 0:
                return
            if waiting is None:
                waiting = len(waiting_trials(self.storage, self.study_id))
            window = max(self.least, math.ceil(4 * self.rate * self.poll_seconds))
            if waiting > window // 2:
                return
            k = min(self._to_enqueue, window - waiting)
            for _ in range(k):
                self.study.enqueue_trial({}, skip_if_exists=False)
            self._to_enqueue -= k
            if self._to_enqueue == 0:
                self.storage.set_study_user_attr(self.study_id, queued_attr(self.run_id), True)


def budget_fully_queued(storage: BaseStorage, study_id: int, run_id: str) -> bool:
    return bool(storage.get_study_user_attrs(study_id).get(queued_attr(run_id)))


def claim_queued_trial(study: optuna.Study, waiting: list[FrozenTrial]) -> Trial | None:
    """A worker's side: claim one of ``waiting`` (atomic WAITING -> RUNNING); None if others got them all."""
    storage = study._storage
    for frozen in waiting:
        try:
            claimed = storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING)
        except UpdateFinishedTrialError:
            continue
        if claimed:
            # What Study.ask does after popping a waiting trial: drop the per-trial cache so
            # the sampler sees the trials other workers finished meanwhile.
            study._thread_local.cached_all_trials = None
            return Trial(study, frozen._trial_id)
    return None
