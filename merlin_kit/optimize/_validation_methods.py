"""The validation methods of a finished run: thin entry points to :mod:`merlin_kit.robustness`.

Robustness sits above optimize in the layers (it runs backtests of a run's results), so these
methods import it lazily; :class:`~._engine.OptimizationRun` inherits them.
"""

from __future__ import annotations

from typing import Any

import pandas as pd


class ValidationMethods:
    """``run.deflated_sharpe()``, ``run.pbo()``, ``run.stress_test()`` and ``run.holdout()``."""

    def deflated_sharpe(self, top_k: int = 20) -> pd.DataFrame:
        """DSR table of the top ``top_k`` complete results: trial, sharpe_ratio, sr0, dsr, skew, kurtosis, months."""
        from ..robustness import run_deflated_sharpe
        return run_deflated_sharpe(self, top_k)

    def pbo(self, top_k: int | None = None, n_splits: int = 16) -> Any:
        """PBO (CSCV) over the distinct parameter sets' daily returns; a PBOResult with ``columns`` and ``returns``."""
        from ..robustness import run_pbo
        return run_pbo(self, top_k, n_splits)

    def stress_test(self, top_k: int = 5) -> pd.DataFrame:
        """Each top result with every numeric optimised parameter moved ±1/±2 steps: retention, worst, fragile."""
        from ..robustness import run_stress_test
        return run_stress_test(self, top_k)

    def holdout(self, start: Any, end: Any = None, top_k: int = 20) -> pd.DataFrame:
        """The top ``top_k`` results backtested on ``[start, end]`` beside their IS metrics (no overlap allowed)."""
        from ..robustness import run_holdout
        return run_holdout(self, start, end, top_k)
