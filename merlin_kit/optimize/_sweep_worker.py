"""A worker's sweep loop: claim a batch ticket, evaluate its points with one Backtester, write them.

Runs inside :meth:`~._worker.WorkerLoop.run` when the run is a sweep
(:func:`~.config.is_sweep`), with that loop's storage, stop checks, heartbeat,
signals and :class:`~._worker.TrialRunner` (its Backtester and indicator cache
serve the whole batch).  Each point becomes a trial with the params,
distributions, user attrs, value, intermediate value and state that ask/tell
gives the same point (:mod:`._outcome`); see :mod:`._sweep` for the protocol.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from ._attrs import ERROR_ATTR, METRICS_ATTR, OWNER_ATTR, RETURNED_ATTR, SWEEP_POINT_ATTR, SWEEP_TICKET_ATTR
from ._budget import claim_queued_trial, waiting_trials
from ._outcome import Outcome, failure_attrs, judge
from ._storage import storage_unavailable
from ._sweep import SweepPlan, cancel, done_keys, sweep_finished, ticket, write_trials, written_points

if TYPE_CHECKING:
    from ._worker import WorkerLoop

log = logging.getLogger("merlin_kit.worker")

#: how often an idle worker looks again for a ticket (a lost batch's replacement) before the sweep ends
IDLE_POLL_SECONDS = 0.1


class SweepWorker:
    """Claims and evaluates batches until none is left, the deadline passes, or the loop is stopped."""

    def __init__(self, loop: "WorkerLoop") -> None:
        self.loop = loop
        self.storage, self.study_id, self.cfg = loop.storage, loop.study_id, loop.cfg
        self.runner = loop.runner
        self.plan = SweepPlan.of(self.cfg)
        #: points earlier runs of the study have (skipped: a resume)
        self.done = done_keys(self.storage.get_all_trials(self.study_id, deepcopy=False), self.plan, self.cfg.run_id)

    def run(self) -> None:
        from ._worker import TrialInterrupted  # (the worker module imports this one lazily)

        loop = self.loop
        while not loop.should_stop():
            claimed = self._claim()
            if claimed is None:
                if sweep_finished(self.storage, self.study_id, self.cfg.run_id):
                    loop.stop_reason, loop.budget_spent = "sweep finished: every batch is written", True
                    return
                time.sleep(IDLE_POLL_SECONDS)  # other workers' batches in flight, or a lost one to be replaced
                continue
            loop.heartbeat.start(claimed._trial_id)
            try:
                self._run_batch(claimed)
            except TrialInterrupted:
                self._give_back(claimed)
                return
            finally:
                loop.heartbeat.stop()

    def _claim(self) -> FrozenTrial | None:
        mine = [t for t in waiting_trials(self.storage, self.study_id)
                if (t.system_attrs.get(SWEEP_TICKET_ATTR) or {}).get("run") == self.cfg.run_id]
        trial = claim_queued_trial(self.loop.study, mine)
        if trial is None:
            return None
        self.storage.set_trial_user_attr(trial._trial_id, OWNER_ATTR, self.runner.owner)
        return next(t for t in mine if t._trial_id == trial._trial_id)

    def _run_batch(self, claimed: FrozenTrial) -> None:
        info = claimed.system_attrs[SWEEP_TICKET_ATTR]
        written: set[int] = set()
        if info.get("replaces") is not None:  # a dead worker's batch: some of its points may be written
            written = written_points(self.storage.get_all_trials(self.study_id, deepcopy=False), self.cfg.run_id)
        todo = [(key, p) for key, p in self.plan.points(self.plan.batch_range(info["batch"]))
                if key not in written and self.plan.key_of(p) not in self.done]
        tid = claimed._trial_id
        if not todo:
            cancel(self.storage, tid, self.cfg.run_id, "cancelled: every point of this batch is in the study")
            return
        trials = [self._evaluate(key, params) for key, params in todo]
        try:  # every point but the last as a new trial; the ticket becomes the last one
            write_trials(self.storage, self.study_id, trials[:-1], commit=(tid, trials[-1]))
        except (UpdateFinishedTrialError, ValueError):
            # another process failed the ticket (it took this worker for dead): its replacement re-does
            # only the point the ticket was to hold
            if not self.storage.get_trial(tid).state.is_finished():
                raise
            log.warning("worker %s: batch %s was ended by another process", self.loop.worker_id, info["batch"])

    def _evaluate(self, key: int, params: dict[str, Any]) -> FrozenTrial:
        """One point as a finished trial (not yet written)."""
        stats = self.runner.stats
        stats.trials += 1
        started = datetime.now()
        attrs: dict[str, Any] = {OWNER_ATTR: self.runner.owner}
        try:
            metrics = self.runner.measure(params)
        except Exception as exc:  # a strategy error fails this point only, as in TrialRunner.evaluate
            if storage_unavailable(exc, "") is not None:
                raise
            outcome = Outcome(TrialState.FAIL, attrs=failure_attrs(exc))
            stats.last_error = outcome.attrs[ERROR_ATTR]
            log.error("worker %s: point %s failed:\n%s", self.loop.worker_id, key, outcome.attrs["traceback"])
        else:
            attrs[METRICS_ATTR] = metrics
            outcome = judge(metrics, self.cfg.objectives, self.cfg.min_profit)
        stats.failed += outcome.state == TrialState.FAIL
        return FrozenTrial(
            number=-1, state=outcome.state, value=outcome.final_value, datetime_start=started,
            datetime_complete=datetime.now(), params=params, distributions=self.plan.dists,
            user_attrs={**attrs, **outcome.attrs}, system_attrs={SWEEP_POINT_ATTR: key},
            intermediate_values={0: outcome.value} if outcome.reported else {}, trial_id=-1)

    def _give_back(self, claimed: FrozenTrial) -> None:
        """A second signal abandoned the batch: nothing of it was written; a replacement ticket re-does it."""
        tid, name = claimed._trial_id, self.loop.signals.name if self.loop.signals is not None else "stop"
        info = claimed.system_attrs[SWEEP_TICKET_ATTR]
        write_trials(self.storage, self.study_id, [ticket(self.cfg.run_id, info["batch"], tid)])
        try:
            self.storage.set_trial_user_attr(tid, RETURNED_ATTR, name)
            self.storage.set_trial_user_attr(tid, ERROR_ATTR, f"returned to the queue: worker {self.loop.worker_id} "
                                                              f"was stopped ({name}) before the batch finished")
            self.storage.set_trial_state_values(tid, state=TrialState.FAIL)
        except UpdateFinishedTrialError:
            return
        self.loop.stop_reason = f"{name} received: batch {info['batch']} returned to the queue"
