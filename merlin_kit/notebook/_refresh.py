"""The thread behind a live view: refresh until the run is done, show the final state, tell whoever waits.

The optimisation monitor (:mod:`.live`) and the walk-forward view
(:mod:`.walkforward_panel`) refresh widgets the same way: a daemon thread whose
output goes to the cell that started it, a refresh every ``interval`` seconds
until the run is done, the final state, an error that is logged and shown
rather than lost, ``on_finish`` called once, and a :meth:`wait` that Ctrl-C
can interrupt (on Windows too). Subclasses say what a refresh, a pause, the
final state and an error display are.

:meth:`RefreshLoop.close` (a re-run of the cell that showed the view, or a new
Run of its panel) stops the thread and closes the view's widgets; the thread
changes widgets only inside :meth:`RefreshLoop._widgets`, which says whether the
view is still open, so a closed view never creates or updates a model again.
"""

from __future__ import annotations

import logging
import threading
import traceback
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from .._platform import wait_event
from ._lifecycle import _cell_parent, close_tree

log = logging.getLogger("merlin_kit.notebook")


_GUARDS_LOCK = threading.Lock()


class RefreshLoop:
    """Base of the live views: ``start()`` runs :meth:`_loop` on a thread; ``stop()``; ``wait()``."""

    #: what the view is called in a logged error
    what = "view"
    run: Any
    interval: float
    on_finish: Callable[[Any], None] | None
    error: str | None
    finished: threading.Event
    _halt: threading.Event
    _thread: threading.Thread | None
    #: set by close(): widgets are no longer touched
    _closed = False

    def _start_thread(self, name: str) -> None:
        self._thread = threading.Thread(target=self._loop, args=(_cell_parent(),), daemon=True, name=name)
        self._thread.start()

    def _loop(self, parent: Any) -> None:
        if parent is not None:
            try:  # route anything this thread prints to the cell that started it (ipykernel >= 7)
                from IPython import get_ipython

                get_ipython().set_parent(parent)
            except Exception:
                pass
        try:
            while not self._halt.is_set():
                done = self.run.done
                with self._widgets() as open_:
                    if open_:
                        self._refresh()
                if done:
                    break
                self._pause()
            self._finish()
        except Exception:
            self.error = traceback.format_exc()
            log.error("%s failed:\n%s", self.what, self.error)
            try:
                with self._widgets() as open_:
                    if open_:
                        self._show_error(self.error.strip().splitlines()[-1])
            except Exception:
                pass
        finally:
            # under the guard: close() (a re-run of the owner's cell) waits for the owner's update instead of
            # closing the owner's widgets while it still sets them; a closed view's owner has moved on
            with self._guard:
                if self.on_finish is not None and not self._closed:
                    try:
                        self.on_finish(self)
                    except Exception:
                        log.exception("on_finish callback failed")
            self.finished.set()

    # -- what a subclass says ------------------------------------------------------
    def _refresh(self) -> None:
        """One refresh while the run goes on."""

    def _pause(self) -> None:
        """Between refreshes."""
        self._halt.wait(self.interval)

    def _finish(self) -> None:
        """Once the run is done (or the view stopped); changes widgets only inside :meth:`_widgets`."""

    def _show_error(self, line: str) -> None:
        """Show the last line of an error of the view itself."""

    # -- public --------------------------------------------------------------------
    def stop(self) -> None:
        """Stop refreshing (the run itself goes on: use ``run.stop()`` for that)."""
        self._halt.set()

    @property
    def _guard(self) -> threading.RLock:
        """Held while the view's widgets change (created on first use: the subclasses' __init__ stay as they are)."""
        with _GUARDS_LOCK:
            guard = self.__dict__.get("_guard_lock")
            if guard is None:
                guard = self.__dict__["_guard_lock"] = threading.RLock()
        return guard

    @contextmanager
    def _widgets(self) -> Iterator[bool]:
        """``with self._widgets() as open_:`` around every change of the view's widgets; ``open_`` is False once
        the view is closed (then nothing may be created or sent)."""
        with self._guard:
            yield not self._closed

    def close(self) -> None:
        """Stop refreshing and close every widget of the view, after the change in progress (the run goes on)."""
        self.stop()
        with self._guard:
            self._closed = True
            widget = getattr(self, "widget", None)
            if widget is not None:
                close_tree(widget)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the run has ended and its final state is shown."""
        return wait_event(self.finished, timeout)  # in slices: Ctrl-C interrupts it on Windows too
