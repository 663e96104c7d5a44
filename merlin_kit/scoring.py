"""The composite score (0-100) of ``specs/METRICS_AND_INDICATORS.md``.

``minmax`` depends on one result alone, so it is the objective an optimiser can
maximise identically in one process or many; ``percentile`` ranks a result
among all others and can only be computed after a study.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Literal, Mapping, Sequence

from .errors import ConfigError

#: score key -> metric name in the metrics dict
SCORE_METRICS: dict[str, str] = {
    "romad": "romad",
    "sharpe": "sharpe_ratio",
    "pf": "profit_factor",
    "ulcer": "ulcer_index",
    "sqn": "sqn",
    "consistency": "consistency_score",
}
DEFAULT_WEIGHTS: dict[str, float] = {"romad": 0.25, "sharpe": 0.20, "pf": 0.20, "ulcer": 0.15, "sqn": 0.10, "consistency": 0.10}
DEFAULT_BOUNDS: dict[str, tuple[float, float]] = {
    "romad": (0.0, 10.0),
    "sharpe": (-1.0, 3.0),
    "pf": (0.0, 5.0),
    "ulcer": (0.0, 20.0),
    "sqn": (-2.0, 7.0),
    "consistency": (0.0, 100.0),
}
DEFAULT_INVERT: frozenset[str] = frozenset({"ulcer"})
NORMALIZATIONS = ("minmax", "percentile")
MISSING_SCORE = 50.0


@dataclass(frozen=True)
class ScoreConfig:
    """Which metrics make the score, their weights (0-1), inversions, bounds and normalisation.

    ``min_score`` drops results under that score from the post-hoc results
    (``None``: keep all).
    """

    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    enabled: tuple[str, ...] | None = None
    invert: frozenset[str] = DEFAULT_INVERT
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=lambda: dict(DEFAULT_BOUNDS))
    normalization: Literal["minmax", "percentile"] = "minmax"
    min_score: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "invert", frozenset(self.invert))
        object.__setattr__(self, "weights", dict(self.weights))
        object.__setattr__(self, "bounds", {**DEFAULT_BOUNDS, **{k: tuple(v) for k, v in dict(self.bounds).items()}})
        if self.enabled is not None:
            object.__setattr__(self, "enabled", tuple(self.enabled))
        self.validate()

    def validate(self) -> None:
        allowed = ", ".join(SCORE_METRICS)
        for key, w in self.weights.items():
            if key not in SCORE_METRICS:
                raise ConfigError(f"score.weights: unknown metric {key!r}; allowed: {allowed}", field="score")
            if not isinstance(w, (int, float)) or isinstance(w, bool) or not (0.0 <= float(w) <= 1.0):
                raise ConfigError(f"score.weights[{key!r}] must be a number in [0, 1], got {w!r}", field="score")
        for key in (self.enabled or ()):
            if key not in SCORE_METRICS:
                raise ConfigError(f"score.enabled: unknown metric {key!r}; allowed: {allowed}", field="score")
        for key in self.invert:
            if key not in SCORE_METRICS:
                raise ConfigError(f"score.invert: unknown metric {key!r}; allowed: {allowed}", field="score")
        for key, (lo, hi) in self.bounds.items():
            if key not in SCORE_METRICS:
                raise ConfigError(f"score.bounds: unknown metric {key!r}; allowed: {allowed}", field="score")
            if not hi > lo:
                raise ConfigError(f"score.bounds[{key!r}]: max must be greater than min, got ({lo}, {hi})", field="score")
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(f"score.normalization must be one of {', '.join(NORMALIZATIONS)}, got {self.normalization!r}",
                              field="score")
        if not any(w > 0 for _, w in self.active_weights()):
            raise ConfigError("score: at least one enabled metric needs a weight > 0", field="score",
                              reason="at least one enabled metric needs a weight > 0")

    def active_weights(self) -> list[tuple[str, float]]:
        """(key, weight) of enabled metrics with weight > 0, in a fixed order."""
        enabled = self.enabled if self.enabled is not None else tuple(self.weights)
        return [(k, float(self.weights.get(k, 0.0))) for k in SCORE_METRICS if k in enabled and self.weights.get(k, 0.0) > 0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": dict(self.weights),
            "enabled": None if self.enabled is None else list(self.enabled),
            "invert": sorted(self.invert),
            "bounds": {k: list(v) for k, v in self.bounds.items()},
            "normalization": self.normalization,
            "min_score": self.min_score,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "ScoreConfig":
        if not data:
            return cls()
        known = {"weights", "enabled", "invert", "bounds", "normalization", "min_score"}
        unknown = set(data) - known
        if unknown:
            reason = f"unknown field(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(known))}"
            raise ConfigError(f"score: {reason}", field="score", reason=reason)
        kwargs = dict(data)
        if "invert" in kwargs:
            kwargs["invert"] = frozenset(kwargs["invert"])
        if "bounds" in kwargs:
            kwargs["bounds"] = {k: tuple(v) for k, v in kwargs["bounds"].items()}
        return cls(**kwargs)

    def with_normalization(self, normalization: Literal["minmax", "percentile"]) -> "ScoreConfig":
        return replace(self, normalization=normalization)


def _metric(metrics: Mapping[str, Any], key: str) -> float | None:
    value = metrics.get(SCORE_METRICS[key])
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def minmax_score(metrics: Mapping[str, Any], config: ScoreConfig | None = None) -> float:
    """Composite score of one result with fixed-bound min-max normalisation."""
    config = config or ScoreConfig()
    total = weight_sum = 0.0
    for key, weight in config.active_weights():
        value = _metric(metrics, key)
        if value is None:
            normalised = MISSING_SCORE
        else:
            lo, hi = config.bounds[key]
            normalised = (min(max(value, lo), hi) - lo) / (hi - lo) * 100.0
            if key in config.invert:
                normalised = 100.0 - normalised
        total += weight * normalised
        weight_sum += weight
    return total / weight_sum


def percentile_scores(all_metrics: Sequence[Mapping[str, Any]], config: ScoreConfig | None = None) -> list[float]:
    """Composite score of each result by percentile rank among all of them (post-hoc only)."""
    config = config or ScoreConfig()
    active = config.active_weights()
    sorted_values: dict[str, list[float]] = {}
    for key, _ in active:
        sorted_values[key] = sorted(v for v in (_metric(m, key) for m in all_metrics) if v is not None)
    scores = []
    for metrics in all_metrics:
        total = weight_sum = 0.0
        for key, weight in active:
            value = _metric(metrics, key)
            ranked = sorted_values[key]
            if value is None:
                normalised = MISSING_SCORE
            else:
                normalised = bisect.bisect_left(ranked, value) / len(ranked) * 100.0
                if key in config.invert:
                    normalised = 100.0 - normalised
            total += weight * normalised
            weight_sum += weight
        scores.append(total / weight_sum)
    return scores


def score_all(all_metrics: Sequence[Mapping[str, Any]], config: ScoreConfig | None = None) -> list[float]:
    """Post-hoc scores of a result set with the configured normalisation."""
    config = config or ScoreConfig()
    if config.normalization == "percentile":
        return percentile_scores(all_metrics, config)
    return [minmax_score(m, config) for m in all_metrics]


def passes_min_score(scores: Iterable[float], config: ScoreConfig) -> list[bool]:
    return [config.min_score is None or s >= config.min_score for s in scores]


# -- score options as text (CLI flags and the panel's fields share these parsers) ---------------------------

def _pairs(text: str | Sequence[str], flag: str) -> list[tuple[str, str]]:
    """``"a=1,b=2"`` (or several such strings) -> [(a, "1"), (b, "2")], each key a score metric."""
    items = [text] if isinstance(text, str) else list(text)
    out = []
    for item in (p.strip() for chunk in items for p in chunk.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not value.strip():
            raise ConfigError(f"{flag}: expected METRIC=VALUE, got {item!r}", field="score")
        if key not in SCORE_METRICS:
            raise ConfigError(f"{flag}: unknown metric {key!r}; allowed: {', '.join(SCORE_METRICS)}", field="score",
                              param=key)
        out.append((key, value.strip()))
    return out


def _number(text: str, flag: str, key: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{flag}: {key}={text!r} is not a number", field="score", param=key) from None
    if not math.isfinite(value):
        raise ConfigError(f"{flag}: {key}={text!r} must be finite", field="score", param=key)
    return value


def parse_score_weights(text: str | Sequence[str]) -> dict[str, float]:
    """``"romad=0.5,sharpe=0.5"`` -> weights; the metrics not named get weight 0 (they leave the score)."""
    return {k: _number(v, "--score-weights", k) for k, v in _pairs(text, "--score-weights")}


def parse_score_bounds(text: str | Sequence[str]) -> dict[str, tuple[float, float]]:
    """``"romad=0:30"`` or ``["romad=0:30", "sharpe=-1:5"]`` -> bounds (the others keep their defaults)."""
    bounds = {}
    for key, value in _pairs(text, "--score-bounds"):
        lo, sep, hi = value.partition(":")
        if not sep:
            raise ConfigError(f"--score-bounds: {key}={value!r}: expected MIN:MAX, e.g. {key}=0:30", field="score",
                              param=key)
        bounds[key] = (_number(lo, "--score-bounds", key), _number(hi, "--score-bounds", key))
    return bounds


def parse_score_metrics(text: str) -> tuple[str, ...]:
    """``"romad,sharpe"`` -> the enabled metrics (each must be a score metric)."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    for name in names:
        if name not in SCORE_METRICS:
            raise ConfigError(f"--score-metrics: unknown metric {name!r}; allowed: {', '.join(SCORE_METRICS)}",
                              field="score", param=name)
    if not names:
        raise ConfigError(f"--score-metrics: name at least one of {', '.join(SCORE_METRICS)}", field="score")
    return names


def score_options(weights: str | Sequence[str] | None = None, bounds: str | Sequence[str] | None = None,
                  metrics: str | None = None) -> dict[str, Any] | None:
    """The ``score`` dict of an OptimizationConfig from the three text options (None: all defaults), checked."""
    score: dict[str, Any] = {}
    if weights:
        score["weights"] = parse_score_weights(weights)
    if bounds:
        score["bounds"] = parse_score_bounds(bounds)
    if metrics:
        score["enabled"] = list(parse_score_metrics(metrics))
    if not score:
        return None
    ScoreConfig.from_dict(score)  # the combination must make a score (an enabled metric with a weight > 0)
    return score


# -- saturation: fixed bounds that many results exceed flatten the score at its ceiling ------------------------

#: share of complete trials at the score's ceiling above which a run warns
SATURATION_SHARE = 0.10
_CEILING = 100.0 - 1e-9


def _nice_ceil(x: float) -> float:
    """A round number >= x (1, 2, 2.5, 5 times a power of ten) to suggest as a wider bound."""
    if x <= 0:
        return float(math.ceil(x))
    scale = 10.0 ** math.floor(math.log10(x))
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):
        if m * scale >= x:
            return m * scale
    return 10.0 * scale  # pragma: no cover


def _fmt(x: float) -> str:
    return f"{x:g}"


def saturation_warnings(all_metrics: Sequence[Mapping[str, Any]], config: ScoreConfig,
                        share: float = SATURATION_SHARE) -> list[str]:
    """Warnings when more than ``share`` of the results score the ceiling (100) of a min-max score.

    A result scores 100 only when every enabled metric sits at the bound that gives 100 (the upper bound,
    the lower one for inverted metrics), so the best results tie and the optimiser cannot tell them apart.
    One line per such metric: in how many results it sits at that bound and the wider bounds to set.
    """
    if config.normalization != "minmax" or not all_metrics:
        return []
    at_ceiling = sum(minmax_score(m, config) >= _CEILING for m in all_metrics)
    if at_ceiling <= share * len(all_metrics):
        return []
    lines = [f"the score saturates: {at_ceiling} of {len(all_metrics)} complete trials "
             f"({at_ceiling / len(all_metrics):.0%}) score exactly 100, so the best results tie; widen the bounds "
             "named below"]
    for key, _ in config.active_weights():
        lo, hi = config.bounds[key]
        values = [v for v in (_metric(m, key) for m in all_metrics) if v is not None]
        if key in config.invert:
            hits = [v for v in values if v <= lo]
            if not hits or min(hits) >= lo:  # at the bound but not beyond it (an ulcer index of 0): nothing to widen
                continue
            wider = -_nice_ceil(-min(hits)) if min(hits) < 0 else float(math.floor(min(hits)))
            where, suggestion = f"lower bound {_fmt(lo)}", f"{key}={_fmt(wider)}:{_fmt(hi)}"
        else:
            hits = [v for v in values if v >= hi]
            if not hits:
                continue
            where, suggestion = f"upper bound {_fmt(hi)}", f"{key}={_fmt(lo)}:{_fmt(_nice_ceil(max(hits)))}"
        lines.append(f"{key} reached its {where} in {len(hits) / len(all_metrics):.0%} of trials "
                     f"(up to {_fmt(round(max(hits) if key not in config.invert else min(hits), 3))}); "
                     f"widen with --score-bounds {suggestion}")
    return lines
