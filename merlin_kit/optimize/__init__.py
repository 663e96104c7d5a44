"""True multi-process Optuna optimisation: one study in shared storage, N worker processes.

The public names live here; the modules behind them are private and each has
one job (see ``docs/architecture.md``): ``config`` (what to optimise, validated),
``_preflight`` (checks before any worker starts), ``_engine`` (the run: processes,
queue, watching, finishing), ``_worker`` (what a worker process runs), ``_samplers`` (sampler names, options, per-worker construction), ``_budget``
(global budgets through the storage), ``_liveness`` (heartbeats, dead workers),
``_storage`` (locations and Optuna storages), ``_journal`` (the journal file backend), ``_runconfig`` (the run's config in the
study), ``_attrs`` (the study's attribute keys), ``_state`` (progress and summary
snapshots), ``_results`` (results rebuilt from the study), ``report`` (text and tables),
``_objectives`` (objectives, Pareto front, hypervolume), ``_constraints`` (constraints on metrics),
``_dask`` (a run's workers as tasks on a Dask cluster: ``cluster=``).
"""

from ._constraints import Constraint, parse_constraints
from ._dask import open_client as open_cluster_client
from ._engine import OptimizationRun, optimize, start_optimization
from ._objectives import Objective, hypervolume, parse_objectives
from ._preflight import DEFAULT_RUNS_DIR, default_run_dir, default_study_name, runs_root
from ._results import OptimizationResult, pareto_points
from ._samplers import OPTIONS as SAMPLER_OPTIONS
from ._samplers import check_sampler
from ._state import Progress, RunSummary, WorkerProgress, WorkerReport
from ._storage import JOURNAL_NAME, StorageLocation, close_storage, journal_location, open_storage, redact
from ._worker import check_join, default_worker_id, run_worker
from .config import OptimizationConfig, OptunaConfig, ParamRange
from .report import progress_text, results_table, summary_lines

__all__ = [
    "Constraint", "Objective", "hypervolume", "pareto_points", "parse_constraints", "parse_objectives",
    "DEFAULT_RUNS_DIR", "JOURNAL_NAME", "OptimizationConfig", "OptimizationResult", "OptimizationRun", "OptunaConfig", "ParamRange",
    "Progress", "RunSummary", "SAMPLER_OPTIONS", "check_sampler", "StorageLocation", "WorkerProgress", "WorkerReport", "check_join", "close_storage",
    "default_worker_id", "open_cluster_client",
    "default_run_dir", "default_study_name", "runs_root", "journal_location", "open_storage", "optimize", "progress_text",
    "redact", "results_table", "run_worker", "start_optimization", "summary_lines",
]
