"""A run's objectives: which metrics, in which direction, and what "better" means when there are several.

One objective is the classic run (``target=``); two to six (``objectives=``)
make a multi-objective study whose answer is a *Pareto front*: the feasible
complete trials that no other feasible complete trial dominates (at least as
good in every objective, better in one).  The convergence budget of such a run
watches the front's *hypervolume*, the volume it dominates up to a reference
point (:func:`reference_point`, :func:`trials_since_hv_gain`).

Everything here is a pure function of objective values, so the workers (which
decide convergence) and the parent (which builds the results) agree.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import ConfigError
from ..metrics import LOWER_IS_BETTER, METRIC_NAMES

MAX_OBJECTIVES = 6
#: direction spellings accepted in ``objectives=`` and ``--objectives name:max``
DIRECTION_ALIASES = {"max": "maximize", "maximize": "maximize", "min": "minimize", "minimize": "minimize"}
#: feasible complete trials whose worst values (pushed out by HV_MARGIN of their range) fix the reference point
HV_REFERENCE_TRIALS = 10
HV_MARGIN = 0.1


@dataclass(frozen=True)
class Objective:
    """One objective: the name the user gave (an alias or a metric), its metric, and its direction."""

    name: str
    metric: str
    direction: str

    @property
    def sign(self) -> float:
        """+1 to turn a value into a loss (minimised), -1 for a maximised objective."""
        return 1.0 if self.direction == "minimize" else -1.0


def _aliases() -> dict[str, str]:
    from .config import TARGET_ALIASES  # config imports this module
    return TARGET_ALIASES


def resolve_metric(name: Any, field: str) -> str:
    """The metric behind a target alias or metric name; a ConfigError naming the allowed ones otherwise."""
    aliases = _aliases()
    metric = aliases.get(name, name) if isinstance(name, str) else None
    if metric != "score" and metric not in METRIC_NAMES:
        raise ConfigError(f"{field}: {name!r} is unknown; allowed: {', '.join(aliases)} or a metric name: "
                          f"{', '.join(METRIC_NAMES)}", field=field, reason=f"unknown metric {name!r}")
    return metric


def default_direction(metric: str) -> str:
    return "minimize" if metric in LOWER_IS_BETTER else "maximize"


def parse_objectives(items: Any) -> list[Objective]:
    """``[("net_profit_pct", "maximize"), ("max_drawdown_pct", "min"), "sharpe"]`` or ``"a:max,b:min"``.

    A bare name takes the metric's natural direction.  Every mistake is a
    ConfigError on field ``objectives``.
    """
    if isinstance(items, str):
        items = [part for part in items.split(",") if part.strip()]
    if not isinstance(items, (list, tuple)) or not items:
        raise ConfigError(f"objectives must be a list of (metric, direction) pairs, got {items!r}", field="objectives")
    if len(items) > MAX_OBJECTIVES:
        raise ConfigError(f"objectives: at most {MAX_OBJECTIVES} objectives, got {len(items)}", field="objectives")
    out: list[Objective] = []
    for item in items:
        if isinstance(item, str):
            name, _, direction = item.strip().partition(":")
            name, direction = name.strip(), direction.strip() or None
        elif isinstance(item, (list, tuple)) and len(item) in (1, 2):
            name, direction = item[0], (item[1] if len(item) == 2 else None)
        else:
            raise ConfigError(f"objectives: each objective is 'metric' or (metric, direction), got {item!r}",
                              field="objectives")
        metric = resolve_metric(name, "objectives")
        if direction is None:
            direction = default_direction(metric)
        elif direction not in DIRECTION_ALIASES:
            raise ConfigError(f"objectives: direction of {name!r} must be one of {', '.join(DIRECTION_ALIASES)}, "
                              f"got {direction!r}", field="objectives", param=str(name))
        objective = Objective(str(name), metric, DIRECTION_ALIASES[direction])
        if any(o.metric == metric for o in out):
            raise ConfigError(f"objectives: {metric!r} is given twice", field="objectives", param=metric)
        out.append(objective)
    return out


def run_objectives(cfg: Any) -> list[Objective]:
    """The objectives of an :class:`OptunaConfig`: ``objectives`` when given, else the one ``target``."""
    if cfg.objectives is not None:
        return parse_objectives(cfg.objectives)
    metric = resolve_metric(cfg.target, "target")
    return [Objective(cfg.target, metric, default_direction(metric))]


def objective_values(metrics: dict[str, Any], objectives: Sequence[Objective]) -> list[float | None]:
    """Each objective's value in a trial's stored metrics (None where the metric is undefined)."""
    return [None if metrics.get(o.metric) is None else float(metrics[o.metric]) for o in objectives]


# -- Pareto front -----------------------------------------------------------
def losses(values: Sequence[float], objectives: Sequence[Objective]) -> tuple[float, ...]:
    """Values as losses (every objective minimised), the form dominance and hypervolume use."""
    return tuple(o.sign * float(v) for v, o in zip(values, objectives))


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Loss vector ``a`` dominates ``b``: no worse anywhere, better somewhere."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_indices(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated loss vectors (duplicates of a front point are all on the front)."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p) for j, q in enumerate(points) if j != i)]


# -- hypervolume --------------------------------------------------------------
def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Volume dominated by loss vectors ``points`` up to ``reference`` (points beyond it add nothing).

    Two objectives: exact sweep here (the common case, easy to check by hand).
    More: Optuna's exact WFG algorithm (``optuna._hypervolume.compute_hypervolume``,
    private in Optuna 5: this is the one place that calls it, tests/test_objectives.py checks it).
    """
    ref = np.asarray(reference, dtype=float)
    pts = np.asarray([p for p in points if all(x < r for x, r in zip(p, ref))], dtype=float)
    if len(pts) == 0:
        return 0.0
    if pts.shape[1] == 1:
        return float(ref[0] - pts[:, 0].min())
    if pts.shape[1] == 2:
        pts = pts[np.lexsort((pts[:, 1], pts[:, 0]))]
        volume, best_y = 0.0, ref[1]
        for x, y in pts:
            if y < best_y:
                volume += (ref[0] - x) * (best_y - y)
                best_y = y
        return float(volume)
    from optuna._hypervolume import compute_hypervolume
    return float(compute_hypervolume(pts, ref))


def reference_point(first_points: Sequence[Sequence[float]]) -> list[float]:
    """The reference point fixed from the first feasible complete trials' loss vectors.

    Their worst loss per objective, pushed out by :data:`HV_MARGIN` of their range
    (or by 1 where they all agree), so those trials' extremes still add volume.
    Fixed once :data:`HV_REFERENCE_TRIALS` trials exist, it never moves after: a
    hypervolume gain is then a real gain, the same on every worker.
    """
    arr = np.asarray(first_points, dtype=float)
    worst, best = arr.max(axis=0), arr.min(axis=0)
    span = worst - best
    return [float(w + (HV_MARGIN * s if s > 0 else 1.0)) for w, s in zip(worst, span)]


def trials_since_hv_gain(entries: Iterable[tuple[int, bool, Sequence[float] | None]],
                         reference: Sequence[float] | None = None) -> tuple[int, float | None]:
    """Trials (of this run) since the feasible front's hypervolume last grew, and that hypervolume.

    ``entries``: every finished trial of the study in trial-number order, as
    ``(counts_for_this_run, feasible, loss vector or None)`` (None: not a feasible complete trial).
    ``reference``: the user's ``hv_reference`` as losses, else :func:`reference_point` of the
    first :data:`HV_REFERENCE_TRIALS` feasible vectors; until those exist, a trial that joins the
    front counts as a gain.
    """
    front: list[Sequence[float]] = []
    first: list[Sequence[float]] = []
    ref = list(reference) if reference is not None else None
    volume: float | None = None
    since = 0
    for mine, feasible, loss in entries:
        gained = False
        if feasible and loss is not None and all(math.isfinite(x) for x in loss):
            if ref is None:
                first.append(loss)
                if len(first) >= HV_REFERENCE_TRIALS:
                    ref = reference_point(first)
                    volume = hypervolume(front, ref)
            if not any(dominates(q, loss) or tuple(q) == tuple(loss) for q in front):
                front = [q for q in front if not dominates(loss, q)] + [loss]
                if ref is None:
                    gained = True
                else:
                    new = hypervolume(front, ref)
                    gained = volume is None or new > volume * (1 + 1e-12) + 1e-300
                    volume = new
        if mine:
            since = 0 if gained else since + 1
    return since, volume


def open_study(study_name: str, storage: Any, objectives: Sequence[Objective]) -> Any:
    """Create (or load, to resume) the study with one direction per objective and the objectives' names.

    The names are what optuna-dashboard shows; a study made with other directions is refused.
    """
    import optuna

    directions = [o.direction for o in objectives]
    try:
        study = optuna.create_study(study_name=study_name, storage=storage, directions=directions,
                                    load_if_exists=True)
    except ValueError as exc:  # optuna raises ValueError for direction mismatches on resume
        raise ConfigError(f"study {study_name!r}: {exc}", field="study_name") from None
    found = [d.name.lower() for d in study.directions]
    if found != directions:
        raise ConfigError(f"study {study_name!r} exists with direction(s) {', '.join(found)}, but the objectives "
                          f"({', '.join(o.name for o in objectives)}) need {', '.join(directions)}; "
                          "use another study_name", field="study_name")
    names = [o.metric for o in objectives]
    if study.metric_names != names:
        with warnings.catch_warnings():  # experimental since Optuna 3.2, and what the dashboard shows
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)
    return study
