"""The notebook experience: configuration panel, live monitor, results helpers, optuna-dashboard.

Needs the ``notebook`` extra (``pip install 'merlin-kit[notebook]'``).  Names are
imported lazily, so ``merlin_kit.notebook.dashboard`` (used by the
``merlin-kit dashboard`` command) works without ipywidgets or plotly.

    from merlin_kit.notebook import ConfigPanel, monitor, dashboard, results_table
    panel = ConfigPanel()          # set ranges, press Run, watch the live monitor
    run = start_optimization(opt, cfg); monitor(run)   # or from code
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ConfigPanel": "widgets", "ParamRow": "controls",
    "LiveMonitor": "live", "monitor": "live", "has_frontend": "live",
    "results_table": "results", "export_csv": "results", "compare_equity": "results", "write_report": "results",
    "run_figures": "results", "summary_lines": "results", "show_static": "results",
    "history_figure": "figures", "parallel_figure": "figures", "equity_figure": "figures",
    "importance_figure": "figures", "param_importances": "figures", "pareto_figure": "pareto",
    "run_pareto_points": "pareto",
    "window_layout_figure": "validation_figures", "stitched_equity_figure": "validation_figures",
    "is_oos_scatter_figure": "validation_figures", "pbo_logit_figure": "validation_figures",
    "pbo_degradation_figure": "validation_figures",
    "WalkForwardView": "walkforward_panel", "show_walkforward": "walkforward_panel",
    "walkforward_figures": "walkforward_panel",
}

#: what the ``notebook`` extra installs that these modules import: a missing one names the extra
_EXTRA_MODULES = {"ipywidgets", "plotly", "anywidget", "IPython", "ipykernel", "nbformat", "optuna_dashboard"}

# eager (it needs neither ipywidgets nor plotly), and so that the name ``dashboard`` is the
# function, not the submodule of the same name
from .dashboard import DashboardHandle, dashboard  # noqa: E402

__all__ = sorted([*_EXPORTS, "DashboardHandle", "dashboard"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'merlin_kit.notebook' has no attribute {name!r}")
    try:
        imported = importlib.import_module(f".{module}", __name__)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in _EXTRA_MODULES:
            raise
        raise ImportError(
            f"merlin_kit.notebook.{name} needs the notebook extra ({missing} is not installed): "
            f"pip install 'merlin-kit[notebook]'") from exc
    value = getattr(imported, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
