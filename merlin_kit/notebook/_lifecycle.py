"""Widgets that belong to a notebook cell: closed, with everything inside them, when that cell runs again.

Re-running a cell clears its output in the browser, but the kernel keeps the old
widgets, and a live view's thread kept refreshing them and even created new
ones (the monitor's final charts) while the cell's new widgets were being
displayed: the frontend then built models that no view would ever show
(``[anywidget] Failed to initialize model`` when it could not load them in time).
So a panel or a view registers itself with the cell that creates it
(:func:`claim_cell`); the next run of that cell closes the previous owners first:
their threads stop touching widgets, and every model is closed before the new
ones are opened.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection
from typing import Any, Protocol

import ipywidgets as W


class Closable(Protocol):
    def close(self) -> None: ...


#: cell id -> (the execute request that registered them, owners displayed by that run of the cell)
_owners: dict[str, tuple[str, list[Closable]]] = {}
_owners_lock = threading.Lock()


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


def _cell_run() -> tuple[str | None, str | None]:
    """(cell id, execute request id) of the cell running now; (None, None) outside a frontend's cell
    (a script, papermill, a button click: JupyterLab sends ``cellId`` only with an execute request)."""
    parent = _cell_parent() or {}
    header = parent.get("header") or {}
    cell = (parent.get("metadata") or {}).get("cellId")
    if header.get("msg_type") != "execute_request" or not cell:
        return None, None
    return str(cell), str(header.get("msg_id"))


def claim_cell(owner: Closable) -> None:
    """Register ``owner`` as shown by the cell running now; first close what an earlier run of it showed."""
    cell, run = _cell_run()
    if cell is None:
        return
    with _owners_lock:
        previous_run, previous = _owners.get(cell, (None, []))
        if previous_run == run:  # a second panel or view of the same run of the cell
            previous.append(owner)
            return
        _owners[cell] = (run, [owner])
    for old in previous:
        if old is not owner:
            old.close()


#: comm closes sent at once before the kernel lets its IOPub messages drain (see :func:`close_tree`)
CLOSE_BATCH = 100
CLOSE_PAUSE = 0.02


def close_tree(root: W.Widget, keep: Collection[int] = ()) -> None:
    """Close ``root`` and every widget it holds (children, layouts, styles): one comm close each.

    ``Widget.close`` closes one model; a panel is hundreds of them.  Calls ``Widget.close``
    itself, so a subclass whose ``close`` calls this function does not recurse.  Models
    whose ``id`` is in ``keep`` (layouts shared with widgets that stay) are left open.
    In a kernel the closes go out in batches of :data:`CLOSE_BATCH` with a short pause
    between them: a burst of ~1,000 comm messages, the new panel's opens right behind
    it, overflowed the kernel-to-browser pipe in CI, which drops what does not fit (issue 15).
    """
    seen: set[int] = set(keep)
    stack: list[Any] = [root]
    order: list[W.Widget] = []
    while stack:
        widget = stack.pop()
        if not isinstance(widget, W.Widget) or id(widget) in seen:
            continue
        seen.add(id(widget))
        for name in widget.keys:
            value = getattr(widget, name, None)
            if isinstance(value, W.Widget):
                stack.append(value)
            elif isinstance(value, (list, tuple)):
                stack.extend(v for v in value if isinstance(v, W.Widget))
        order.append(widget)
    pace = _cell_parent() is not None
    for i, widget in enumerate(order):
        if pace and i and i % CLOSE_BATCH == 0:
            time.sleep(CLOSE_PAUSE)
        W.Widget.close(widget)
