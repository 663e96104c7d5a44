"""A chain of studies worked through by the same worker processes (a walk-forward's windows).

A run started with ``keep_workers=True`` marks its study *pending* (:data:`~._attrs.NEXT_ATTR`
with its run id): its workers, once the run's budget is spent (trials, time or
convergence; not on Stop, a signal or the parent's death), wait for the next
study instead of exiting.  The parent sets the next run up (its study, its
:class:`~._runconfig.RunConfig` with its own deadline, its trial queue) and
*links* the finished study to it; every worker, local or ``merlin-kit worker``
elsewhere, then joins it.  *End* (or a Stop of the run) sends them home.  The
link carries the run id of the study it belongs to, so the link left in a
study by an earlier call is never followed.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from optuna.storages import BaseStorage

from ._attrs import NEXT_ATTR

#: how long a worker waits for the parent to link a pending study to the next one
CHAIN_WAIT_SECONDS = 120.0
#: the poll interval while a link usually comes (the parent's next window is ready within a second) ...
CHAIN_POLL_SECONDS = 0.02
CHAIN_FAST_POLL_SECONDS = 1.0
#: ... then it grows by half each poll up to this: many waiting workers (``merlin-kit worker`` on other
#: machines, one shared PostgreSQL) must not query the storage 50 times a second each while the parent
#: is busy, and a Stop is still seen within half a second
CHAIN_SLOW_POLL_SECONDS = 0.5


def mark_pending(storage: BaseStorage, study_id: int, run_id: str) -> None:
    """This run's workers will wait for a next study when the run's budget is spent."""
    storage.set_study_user_attr(study_id, NEXT_ATTR, {"run": run_id, "state": "pending", "study": None})


def link_next(storage: BaseStorage, study_id: int, run_id: str, next_study: str) -> None:
    """The workers of run ``run_id`` go on to ``next_study`` (which is set up and ready)."""
    storage.set_study_user_attr(study_id, NEXT_ATTR, {"run": run_id, "state": "next", "study": next_study})


def end_chain(storage: BaseStorage, study_id: int, run_id: str) -> None:
    """No study follows: the waiting workers of run ``run_id`` exit."""
    storage.set_study_user_attr(study_id, NEXT_ATTR, {"run": run_id, "state": "end", "study": None})


def chain_state(attrs: dict[str, Any], run_id: str) -> tuple[str, str | None]:
    """``(state, next study)`` of run ``run_id`` from its study's user attrs; ``("end", None)`` when unchained."""
    link = attrs.get(NEXT_ATTR)
    if not isinstance(link, dict) or link.get("run") != run_id:
        return "end", None
    return str(link.get("state")), link.get("study")


def wait_for_next(storage: BaseStorage, study_id: int, run_id: str, interrupted: Callable[[dict[str, Any]], bool],
                  timeout: float = CHAIN_WAIT_SECONDS) -> str | None:
    """The next study of run ``run_id``'s workers, once linked; None for the end of the chain.

    ``interrupted(attrs)``: checked at every poll with the study's user attrs (a stop, a signal, the parent's
    death); true ends the wait with None, as does ``timeout`` seconds without a link (a parent gone elsewhere).
    """
    began = time.monotonic()
    end = began + timeout
    interval = CHAIN_POLL_SECONDS
    while True:
        attrs = storage.get_study_user_attrs(study_id)
        state, study = chain_state(attrs, run_id)
        if state == "next":
            return study
        now = time.monotonic()
        if state != "pending" or interrupted(attrs) or now > end:
            return None
        if now - began > CHAIN_FAST_POLL_SECONDS:
            interval = min(interval * 1.5, CHAIN_SLOW_POLL_SECONDS)
        time.sleep(min(interval, end - now + CHAIN_POLL_SECONDS))  # no long sleep past the timeout
