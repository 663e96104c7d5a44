"""Overfitting statistics: is the best of many trials real, or the luck of the draw?

An optimiser that tries thousands of parameter sets will find a good-looking one
on pure noise.  Two answers from the literature, as defined in ``VALIDATION.md``:

* the **Deflated Sharpe Ratio** -- D. H. Bailey and M. López de Prado, "The
  Deflated Sharpe Ratio: Correcting for Selection Bias, Backtest Overfitting and
  Non-Normality", *Journal of Portfolio Management* 40(5), 2014, pp. 94-107.
  The probability that the chosen Sharpe ratio beats the best one expected from
  ``N`` skill-less trials, given its track length, skewness and kurtosis;
* the **Probability of Backtest Overfitting** by combinatorially symmetric
  cross-validation (CSCV) -- D. H. Bailey, J. M. Borwein, M. López de Prado and
  Q. J. Zhu, "The Probability of Backtest Overfitting", *Journal of
  Computational Finance* 20(4), 2017, pp. 39-69.  How often the in-sample
  winner ends in the bottom half out of sample.

Numpy and the standard library only (``statistics.NormalDist`` gives Φ and Φ⁻¹):
scipy is not a dependency of the kit.  :func:`pbo` is vectorised over the
``binom(S, S/2)`` combinations -- per-group sums and sums of squares are
computed once, so no rows are copied per combination.

The run-level part applies them (and three plainer checks) to a finished
optimisation run; ``OptimizationRun`` exposes each as a thin method:

* :func:`run_deflated_sharpe` -- DSR of the top results (N and V over the study);
* :func:`run_pbo` -- PBO over the distinct parameter sets' daily returns
  (:func:`run_daily_returns`, :func:`daily_returns`), all backtests on one
  :class:`~merlin_kit.backtest.Backtester`;
* :func:`run_stress_test` -- each top result with every numeric optimised
  parameter moved ±1 and ±2 steps (:func:`neighbour_moves`);
* :func:`run_holdout` -- the top results backtested on a window the optimisation
  did not see, ranked side by side with their in-sample metrics;
* :func:`monte_carlo` -- bootstrap of a backtest's trade sequence: distribution
  of the maximum drawdown and the final return.

This package sits above ``merlin_kit.optimize`` (it reads runs), so the engine
imports it lazily inside those methods, never at module level.
"""

from ._holdout import HOLDOUT_METRICS, holdout_split, run_holdout
from ._montecarlo import MonteCarloResult, monte_carlo
from ._pbo import TIE_TOLERANCE, PBOResult, pbo
from ._runs import daily_returns, run_daily_returns, run_deflated_sharpe, run_pbo, study_sharpe_population
from ._sharpe import (
    EULER_GAMMA, DeflatedSharpe, deflated_sharpe, excess_moments, expected_max_sharpe, sharpe_variance,
)
from ._stress import FRAGILE_RETENTION, neighbour_moves, run_stress_test

__all__ = [
    "EULER_GAMMA",
    "FRAGILE_RETENTION",
    "HOLDOUT_METRICS",
    "TIE_TOLERANCE",
    "DeflatedSharpe",
    "MonteCarloResult",
    "PBOResult",
    "daily_returns",
    "deflated_sharpe",
    "excess_moments",
    "expected_max_sharpe",
    "holdout_split",
    "monte_carlo",
    "neighbour_moves",
    "pbo",
    "run_deflated_sharpe",
    "run_holdout",
    "run_daily_returns",
    "run_pbo",
    "run_stress_test",
    "sharpe_variance",
    "study_sharpe_population",
]
