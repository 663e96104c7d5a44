"""The budget bookkeeping of ``merlin_kit.optimize._budget`` on an in-memory study, without processes.

The multi-process tests (test_optimize, test_distributed) show that budgets hold end to end; these pin down
each rule on its own, in milliseconds, so that a wrong comparison or count is caught by name (and so that
``benchmarks/mutation.py`` can run them for every mutant).
"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from merlin_kit.optimize._attrs import CANCELLED_ATTR, ERROR_ATTR, OWNER_ATTR, RETURNED_ATTR, queued_attr
from merlin_kit.optimize._budget import (
    JOURNAL_QUEUE_WINDOW,
    RDB_QUEUE_WINDOW,
    TrialQueue,
    belongs_to_run,
    best_trial,
    budget_fully_queued,
    claim_queued_trial,
    is_better,
    trials_since_improvement,
    waiting_trials,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def study(direction: str = "maximize") -> optuna.Study:
    return optuna.create_study(direction=direction, storage=optuna.storages.InMemoryStorage())


def add(s: optuna.Study, value: float | None, *, state: TrialState = TrialState.COMPLETE, run: str | None = "r1",
        **attrs) -> None:
    user_attrs = dict(attrs)
    if run is not None:
        user_attrs[OWNER_ATTR] = {"worker": 0, "pid": 1, "host": "h", "run": run}
    s.add_trial(optuna.trial.create_trial(state=state, value=value if state == TrialState.COMPLETE else None,
                                          user_attrs=user_attrs))


# -- comparisons -------------------------------------------------------------------------------------------
def test_is_better_is_strict_in_both_directions():
    assert is_better(1.0, None, "maximize") and is_better(1.0, None, "minimize")
    assert is_better(2.0, 1.0, "maximize") and not is_better(1.0, 2.0, "maximize")
    assert is_better(1.0, 2.0, "minimize") and not is_better(2.0, 1.0, "minimize")
    assert not is_better(1.0, 1.0, "maximize") and not is_better(1.0, 1.0, "minimize")  # a tie is no improvement


def test_best_trial_is_the_earliest_best_complete_trial():
    s = study()
    add(s, 1.0)
    add(s, 3.0)
    add(s, 3.0)  # a tie: the earlier one stays best
    add(s, None, state=TrialState.PRUNED)
    add(s, None, state=TrialState.FAIL)
    trials = s.get_trials()
    assert best_trial(trials, "maximize").number == 1
    assert best_trial(trials, "minimize").number == 0
    assert best_trial([t for t in trials if t.state != TrialState.COMPLETE], "maximize") is None
    assert best_trial([], "maximize") is None


# -- which trials a run counts -----------------------------------------------------------------------------
def test_belongs_to_run_by_owner_then_by_number():
    s = study()
    add(s, 1.0, run="r1")                       # 0: owned by r1
    add(s, 1.0, run="r2")                       # 1: owned by r2
    add(s, 1.0, run=None)                       # 2: no owner: judged by number
    add(s, 1.0, run=None, **{CANCELLED_ATTR: "r1"})  # 3: retired unrun: nobody's
    t = s.get_trials()
    assert belongs_to_run(t[0], "r1", 10) and not belongs_to_run(t[0], "r2", 0)
    assert belongs_to_run(t[1], "r2", 10) and not belongs_to_run(t[1], "r1", 0)
    assert belongs_to_run(t[2], "r1", 2) and belongs_to_run(t[2], "r1", 1)  # number >= first
    assert not belongs_to_run(t[2], "r1", 3)  # created before this run
    assert not belongs_to_run(t[3], "r1", 0)


def test_trials_since_improvement_counts_this_runs_trials_after_the_study_best():
    s = study()
    add(s, 5.0, run="old")   # 0: an earlier run's best
    add(s, 4.0)              # 1: r1, no improvement  -> 1
    add(s, 6.0)              # 2: r1, improves        -> 0
    add(s, 6.0)              # 3: r1, a tie           -> 1
    add(s, None, state=TrialState.PRUNED)  # 4: r1     -> 2
    add(s, None, state=TrialState.FAIL)    # 5: r1     -> 3
    add(s, 9.0, run="other")  # 6: another run's trial: not r1's count, but it raises the study's best
    add(s, 8.0)              # 7: r1, below 9         -> 4
    add(s, None, state=TrialState.FAIL, **{RETURNED_ATTR: "SIGTERM"})  # 8: given back: not counted
    add(s, 1.0, run=None, **{CANCELLED_ATTR: "r1", ERROR_ATTR: "x"})  # 9: retired: not counted (COMPLETE here)
    trials = s.get_trials()
    assert trials_since_improvement(trials, "r1", 0, "maximize") == 4
    assert trials_since_improvement(trials[:3], "r1", 0, "maximize") == 0
    assert trials_since_improvement(trials[:6], "r1", 0, "maximize") == 3
    # minimising: 4.0 improves on 5.0 (0); 6.0, 6.0, pruned, failed, 8.0 do not (5); 9.0 is another run's
    assert trials_since_improvement(trials, "r1", 0, "minimize") == 5
    assert trials_since_improvement(trials, "nobody", 0, "maximize") == 0
    # the order is the trial number, not the list order
    assert trials_since_improvement(list(reversed(trials)), "r1", 0, "maximize") == 4


# -- the queue ----------------------------------------------------------------------------------------------
def test_fill_queues_the_first_window_and_top_up_keeps_it_to_the_exact_budget():
    s = study()
    q = TrialQueue(s, "r1", rdb=True, poll_seconds=0.2)
    assert q.least == RDB_QUEUE_WINDOW and TrialQueue(s, "r1", rdb=False, poll_seconds=0.2).least == JOURNAL_QUEUE_WINDOW
    n = 2 * RDB_QUEUE_WINDOW + 5
    q.fill(n)
    storage, sid = s._storage, s._study_id
    assert len(waiting_trials(storage, sid)) == RDB_QUEUE_WINDOW
    assert not budget_fully_queued(storage, sid, "r1")
    q.top_up()  # more than half the window still waits: nothing added
    assert len(waiting_trials(storage, sid)) == RDB_QUEUE_WINDOW
    # run the queue down to half the window: a top-up refills it
    claimed = 0
    while len(waiting_trials(storage, sid)) > RDB_QUEUE_WINDOW // 2:
        trial = claim_queued_trial(s, waiting_trials(storage, sid))
        s.tell(trial, 1.0)
        claimed += 1
    q.top_up()
    assert len(waiting_trials(storage, sid)) == RDB_QUEUE_WINDOW
    # drain everything: exactly n trials were ever queued, and the run says so once all are queued
    while True:
        waiting = waiting_trials(storage, sid)
        if not waiting:
            q.top_up()
            waiting = waiting_trials(storage, sid)
            if not waiting:
                break
        s.tell(claim_queued_trial(s, waiting), 1.0)
        q.top_up()
    assert len(s.get_trials()) == n
    assert budget_fully_queued(storage, sid, "r1") and storage.get_study_user_attrs(sid)[queued_attr("r1")] is True
    assert not budget_fully_queued(storage, sid, "r2")


def test_fill_smaller_than_a_window_queues_exactly_the_budget():
    s = study()
    q = TrialQueue(s, "r1", rdb=True, poll_seconds=0.2)
    q.fill(3)
    assert len(waiting_trials(s._storage, s._study_id)) == 3
    assert budget_fully_queued(s._storage, s._study_id, "r1")


def test_the_window_grows_with_the_trial_rate():
    s = study()
    q = TrialQueue(s, "r1", rdb=True, poll_seconds=0.5)
    q.rate = 100.0  # trials/s: 4 * 100 * 0.5 = 200 ahead
    q.fill(1000)
    assert len(waiting_trials(s._storage, s._study_id)) == 200


def test_fill_reuses_an_earlier_runs_queue_and_retires_the_excess():
    s = study()
    for _ in range(5):
        s.enqueue_trial({}, skip_if_exists=False)
    q = TrialQueue(s, "r2", rdb=True, poll_seconds=0.2)
    q.fill(3)  # 5 left queued by an earlier run, 3 needed: 2 retired unrun
    trials = s.get_trials()
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    retired = [t for t in trials if t.state == TrialState.FAIL]
    assert len(trials) == 5 and len(waiting) == 3 and [t.number for t in retired] == [3, 4]
    assert all(t.user_attrs[CANCELLED_ATTR] == "r2" and "cancelled" in t.user_attrs[ERROR_ATTR] for t in retired)
    assert budget_fully_queued(s._storage, s._study_id, "r2")

    s2 = study()
    for _ in range(2):
        s2.enqueue_trial({}, skip_if_exists=False)
    q2 = TrialQueue(s2, "r3", rdb=True, poll_seconds=0.2)
    q2.fill(5)  # 2 reused, 3 more queued
    assert len(waiting_trials(s2._storage, s2._study_id)) == 5 and len(s2.get_trials()) == 5
    assert budget_fully_queued(s2._storage, s2._study_id, "r3")


def test_claim_takes_one_waiting_trial_and_skips_those_already_taken():
    s = study()
    for _ in range(2):
        s.enqueue_trial({}, skip_if_exists=False)
    waiting = waiting_trials(s._storage, s._study_id)
    first = claim_queued_trial(s, waiting)  # the stale list still holds the trial just claimed
    assert first is not None and first.number == 0
    assert s._storage.get_trial(first._trial_id).state == TrialState.RUNNING
    second = claim_queued_trial(s, waiting)
    assert second is not None and second.number == 1
    assert claim_queued_trial(s, waiting) is None  # both taken: nothing left
    s.tell(first, 1.0)
    assert claim_queued_trial(s, waiting) is None  # a finished trial is not claimed again
    assert claim_queued_trial(s, []) is None


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_best_trial_follows_the_direction(direction):
    s = study(direction)
    for v in (2.0, 1.0, 3.0):
        add(s, v)
    expected = 2 if direction == "maximize" else 1
    assert best_trial(s.get_trials(), direction).number == expected


def test_nothing_is_queued_before_fill_and_a_slow_run_keeps_the_least_window():
    s = study()
    q = TrialQueue(s, "r1", rdb=True, poll_seconds=10.0)
    q.top_up()  # before fill: no budget known, nothing queued
    assert s.get_trials() == []
    q.fill(100)  # rate unknown (0): the least window, however long the poll
    assert len(waiting_trials(s._storage, s._study_id)) == RDB_QUEUE_WINDOW


def test_a_budget_one_over_the_window_is_queued_to_its_last_trial():
    s = study()
    q = TrialQueue(s, "r1", rdb=True, poll_seconds=0.2)
    n = RDB_QUEUE_WINDOW + 1
    q.fill(n)  # one trial left to queue after the first window
    storage, sid = s._storage, s._study_id
    while True:
        waiting = waiting_trials(storage, sid)
        if not waiting:
            break
        s.tell(claim_queued_trial(s, waiting), 1.0)
        q.top_up()
    assert len(s.get_trials()) == n and budget_fully_queued(storage, sid, "r1")


def test_top_up_reads_nothing_once_the_budget_is_queued(monkeypatch):
    """The monitor calls top_up on every poll: once all is queued that must cost no storage query."""
    s = study()
    q = TrialQueue(s, "r1", rdb=True, poll_seconds=0.2)
    q.fill(3)

    def no_query(*args, **kwargs):
        raise AssertionError("top_up queried the storage after the whole budget was queued")

    monkeypatch.setattr(s._storage, "get_all_trials", no_query)
    monkeypatch.setattr(s._storage, "set_study_user_attr", no_query)
    q.top_up()
