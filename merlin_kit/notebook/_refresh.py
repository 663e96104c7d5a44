"""The thread behind a live view: refresh until the run is done, show the final state, tell whoever waits.

The optimisation monitor (:mod:`.live`) and the walk-forward view
(:mod:`.walkforward_panel`) refresh widgets the same way: a daemon thread whose
output goes to the cell that started it, a refresh every ``interval`` seconds
until the run is done, the final state, an error that is logged and shown
rather than lost, ``on_finish`` called once, and a :meth:`wait` that Ctrl-C
can interrupt (on Windows too). Subclasses say what a refresh, a pause, the
final state and an error display are.
"""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Any, Callable

from .._platform import wait_event

log = logging.getLogger("merlin_kit.notebook")


def _cell_parent() -> Any:
    """The message parent of the cell running now (None outside a kernel)."""
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None and getattr(shell, "kernel", None) is not None and hasattr(shell, "get_parent"):
            return shell.get_parent()
    except Exception:
        pass
    return None


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
                self._refresh()
                if done:
                    break
                self._pause()
            self._finish()
        except Exception:
            self.error = traceback.format_exc()
            log.error("%s failed:\n%s", self.what, self.error)
            try:
                self._show_error(self.error.strip().splitlines()[-1])
            except Exception:
                pass
        finally:
            if self.on_finish is not None:
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
        """Once the run is done (or the view stopped)."""

    def _show_error(self, line: str) -> None:
        """Show the last line of an error of the view itself."""

    # -- public --------------------------------------------------------------------
    def stop(self) -> None:
        """Stop refreshing (the run itself goes on: use ``run.stop()`` for that)."""
        self._halt.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the run has ended and its final state is shown."""
        return wait_event(self.finished, timeout)  # in slices: Ctrl-C interrupts it on Windows too
