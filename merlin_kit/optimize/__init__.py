"""True multi-process Optuna optimisation: one study in shared storage, N worker processes."""

from .config import OptimizationConfig, OptunaConfig, ParamRange
from .engine import OptimizationResult, OptimizationRun, optimize, start_optimization
from .worker import run_worker

__all__ = [
    "OptimizationConfig", "OptimizationResult", "OptimizationRun", "OptunaConfig", "ParamRange",
    "optimize", "run_worker", "start_optimization",
]
