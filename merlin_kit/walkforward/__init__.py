"""Walk-forward analysis: rolling in-sample / out-of-sample windows in calendar days.

Optimising on one window and trading the result on the next one is the
classic answer to "do the optimised parameters survive the future?" (Pardo,
*The Evaluation and Optimization of Trading Strategies*, 2nd ed., 2008, ch. 11).
The windows follow ``VALIDATION.md`` ("Walk-forward windows") step by step so
that the kit's windows are the reference system's windows, bar for bar:
targets are calendar days, a target is resolved to "the first bar at or after"
it, and a window *ends* on the last bar strictly before its end target.

:func:`walk_forward` runs the analysis (spec "Per window" and "Stitched
out-of-sample result"): one optimisation per IS window (all of them on one set
of worker processes, started once), its best parameters backtested on the
following OOS window, the OOS pieces stitched into one equity curve, one trade list and the walk-forward efficiency (WFE).
:func:`start_walk_forward` starts it in the background and returns a
:class:`WalkForwardRun` (progress, stop, wait, result).
"""

from . import _windows
from ._run import WalkForwardProgress, WalkForwardRun, start_walk_forward, walk_forward
from ._runner import WF_JOURNAL_NAME, WINDOW_ATTR, WINDOW_METRICS, WalkForwardResult, WindowResult
from ._stitch import TRADE_COLUMNS, StitchedResult, stitch, stitched_trades, walk_forward_efficiency
from ._windows import Window, split_windows

__all__ = [
    "TRADE_COLUMNS", "WF_JOURNAL_NAME", "WINDOW_ATTR", "WINDOW_METRICS", "StitchedResult", "WalkForwardProgress",
    "WalkForwardResult", "WalkForwardRun", "Window", "WindowResult", "split_windows", "start_walk_forward", "stitch",
    "stitched_trades", "walk_forward", "walk_forward_efficiency",
]

#: private, kept importable from the old module path (the window tests use it)
_end_index = _windows._end_index
