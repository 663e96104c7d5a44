"""A worker waiting for the next study of a chain (a walk-forward's next window), on a real journal storage:
it joins at once when the link comes quickly, and backs off while the parent is busy, so that many waiting
workers on one shared server do not query it 50 times a second each."""

from __future__ import annotations

import threading
import time

import optuna

from merlin_kit.optimize._chain import link_next, mark_pending, wait_for_next
from merlin_kit.optimize._storage import open_storage


class CountingStorage:
    """The real storage, counting the reads of study user attrs (the waiter's poll)."""

    def __init__(self, storage):
        self._storage = storage
        self.reads = 0

    def get_study_user_attrs(self, study_id):
        self.reads += 1
        return self._storage.get_study_user_attrs(study_id)


def pending_study(tmp_path):
    storage = open_storage(str(tmp_path / "journal.log"))
    study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "w1")
    mark_pending(storage, study_id, "run-1")
    return storage, study_id


def link_after(storage, study_id: int, seconds: float) -> threading.Thread:
    def link():
        time.sleep(seconds)
        link_next(storage, study_id, "run-1", "w2")

    thread = threading.Thread(target=link)
    thread.start()
    return thread


def test_a_quick_link_is_joined_at_once(tmp_path):
    storage, study_id = pending_study(tmp_path)
    thread = link_after(storage, study_id, 0.3)
    began = time.monotonic()
    assert wait_for_next(storage, study_id, "run-1", lambda attrs: False) == "w2"
    thread.join()
    assert time.monotonic() - began < 0.3 + 0.25  # polled every 20 ms while a link usually comes


def test_a_long_wait_backs_off_and_still_sees_the_link(tmp_path):
    storage, study_id = pending_study(tmp_path)
    counting = CountingStorage(storage)
    thread = link_after(storage, study_id, 4.0)
    began = time.monotonic()
    assert wait_for_next(counting, study_id, "run-1", lambda attrs: False) == "w2"
    thread.join()
    waited = time.monotonic() - began
    assert waited < 4.0 + 0.5 + 0.25  # seen within one slow poll (0.5 s)
    # polling every 20 ms throughout would be ~200 reads; fast for the first second, then backing off: ~65
    assert counting.reads < 90, counting.reads


def test_an_interrupt_during_a_long_wait_ends_it_within_half_a_second(tmp_path):
    storage, study_id = pending_study(tmp_path)
    stop_at = time.monotonic() + 2.5
    began = time.monotonic()
    assert wait_for_next(storage, study_id, "run-1", lambda attrs: time.monotonic() > stop_at) is None
    assert time.monotonic() - began < 2.5 + 0.5 + 0.25


def test_the_timeout_is_kept_while_backing_off(tmp_path):
    storage, study_id = pending_study(tmp_path)
    began = time.monotonic()
    assert wait_for_next(storage, study_id, "run-1", lambda attrs: False, timeout=2.2) is None
    assert 2.2 <= time.monotonic() - began < 2.2 + 0.25
