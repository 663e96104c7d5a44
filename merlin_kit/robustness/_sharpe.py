"""The Deflated Sharpe Ratio (Bailey & López de Prado 2014): SR0, DSR, the moments and variance behind them."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Iterable

import numpy as np

from ..errors import ConfigError
from ..metrics import RISK_FREE_MONTHLY_PCT

#: Euler–Mascheroni constant, to the digits the spec gives
EULER_GAMMA = 0.5772156649
_NORMAL = NormalDist()


# ------------------------------------------------------------------ Deflated Sharpe


def expected_max_sharpe(sr_variance: float, n_trials: int) -> float | None:
    """SR0: the expected maximum Sharpe ratio of ``n_trials`` skill-less trials.

    ``SR0 = √V ((1 − γ) Φ⁻¹(1 − 1/N) + γ Φ⁻¹(1 − 1/(N e)))``; ``None`` where the spec
    says undefined (``N ≤ 1`` or ``V < 0``) and for a non-finite ``V``.
    """
    n = _trial_count(n_trials)
    v = _finite(sr_variance)
    if n <= 1 or v is None or v < 0:
        return None
    z = (1.0 - EULER_GAMMA) * _NORMAL.inv_cdf(1.0 - 1.0 / n) + EULER_GAMMA * _NORMAL.inv_cdf(1.0 - 1.0 / (n * math.e))
    return math.sqrt(v) * z


def deflated_sharpe(sr: float | None, *, n_trials: int, sr_variance: float, skew: float | None,
                    kurtosis: float | None, track_length: int) -> float | None:
    """DSR: ``Φ((SR − SR0) √(T − 1) / √(1 − g3 SR + (g4 − 1)/4 SR²))``, clipped to [0, 1].

    ``sr`` is the candidate's (monthly) Sharpe ratio, ``track_length`` T its number
    of monthly returns, ``skew``/``kurtosis`` (non-excess, Pearson: 3 for a normal
    law) population moments of its monthly excess returns (:func:`excess_moments`).
    ``None`` where undefined: no SR, SR0 undefined, ``T < 3``, a missing moment or a
    square-root argument ≤ 0.
    """
    sr_f, g3, g4 = _finite(sr), _finite(skew), _finite(kurtosis)
    sr0 = expected_max_sharpe(sr_variance, n_trials)
    t = _trial_count(track_length, "track_length")
    if sr_f is None or g3 is None or g4 is None or sr0 is None or t < 3:
        return None
    radicand = 1.0 - g3 * sr_f + (g4 - 1.0) / 4.0 * sr_f * sr_f
    if not radicand > 0:
        return None
    z = (sr_f - sr0) * math.sqrt(t - 1) / math.sqrt(radicand)
    return min(1.0, max(0.0, _NORMAL.cdf(z)))


def excess_moments(monthly_returns_pct: Iterable[float]) -> tuple[float | None, float | None]:
    """(skewness, Pearson kurtosis) of the monthly excess returns ``r − 2/12 %``, population moments.

    ``m_k`` = mean of ``(x − mean)^k``; skew = ``m3 / m2^1.5``, kurtosis = ``m4 / m2²``
    (non-excess).  ``(None, None)`` with no return or a zero variance.  Monthly
    returns as :func:`merlin_kit.metrics.monthly_returns` gives them.
    """
    x = _as_array(monthly_returns_pct) - RISK_FREE_MONTHLY_PCT
    if x.ndim != 1 or x.shape[0] == 0 or not np.all(np.isfinite(x)):
        return None, None
    d = x - x.mean()
    m2 = float(np.mean(d * d))
    if m2 == 0:
        return None, None
    return float(np.mean(d ** 3)) / m2 ** 1.5, float(np.mean(d ** 4)) / (m2 * m2)


def sharpe_variance(sharpe_ratios: Iterable[float | None]) -> float | None:
    """Population variance ``V`` of the defined Sharpe ratios of a study (``None``/NaN skipped).

    ``None`` when no ratio is defined.  Pair it with ``N`` = every completed
    trial, not only the defined or distinct ones (spec).
    """
    values = [float(s) for s in sharpe_ratios if s is not None and math.isfinite(float(s))]
    return float(np.var(values)) if values else None


@dataclass(frozen=True)
class DeflatedSharpe:
    """A candidate's DSR with every number that went into it (for reports and JSON)."""

    dsr: float | None
    sharpe_ratio: float | None
    expected_max_sharpe: float | None
    n_trials: int
    sr_variance: float | None
    skew: float | None
    kurtosis: float | None
    track_length: int

    @classmethod
    def from_monthly(cls, sharpe_ratio: float | None, monthly_returns_pct: Iterable[float], *,
                     n_trials: int, sr_variance: float | None) -> "DeflatedSharpe":
        """From the candidate's monthly returns (%): T, skewness and kurtosis computed here."""
        monthly = _as_array(monthly_returns_pct)
        skew, kurt = excess_moments(monthly)
        t = int(monthly.shape[0])
        if sr_variance is None:
            sr0 = dsr = None
        else:
            sr0 = expected_max_sharpe(sr_variance, n_trials)
            dsr = deflated_sharpe(sharpe_ratio, n_trials=n_trials, sr_variance=sr_variance, skew=skew,
                                  kurtosis=kurt, track_length=t)
        return cls(dsr=dsr, sharpe_ratio=_finite(sharpe_ratio), expected_max_sharpe=sr0, n_trials=int(n_trials),
                   sr_variance=None if sr_variance is None else float(sr_variance), skew=skew,
                   kurtosis=kurt, track_length=t)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _as_array(values: Iterable[float]) -> np.ndarray:
    return np.asarray(values if isinstance(values, (np.ndarray, list, tuple)) else list(values), dtype=np.float64)


def _finite(x: Any) -> float | None:
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"expected a number, got {x!r}") from exc
    return f if math.isfinite(f) else None


def _trial_count(n: Any, field: str = "n_trials") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ConfigError(f"{field} must be an integer, got {n!r}", field=field)
    return int(n)
