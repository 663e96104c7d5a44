"""The run's configuration as stored in the study, and how a worker rebuilds its inputs from it.

Storing everything in the study's user attrs is what lets a worker start from
``(storage, study name, worker id)`` alone, on this machine or another one.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

import pandas as pd
from optuna.storages import BaseStorage

from ..data import PreparedData, fingerprint, load_data, prepare
from ..errors import ConfigError, DataError, StrategyError
from ..scoring import ScoreConfig
from ..strategies import Strategy, get_strategy, is_registered_id
from ._attrs import CONFIG_ATTR
from ._constraints import Constraint, parse_constraints
from ._objectives import Objective, run_objectives
from ._liveness import host_id
from ._trust import TrustPolicy, sign_pickle, sign_spec, warn_secret_globals
from .config import OptunaConfig, SearchDim


def _jsonable_time(value: Any) -> str | None:
    if value is None:
        return None
    return pd.Timestamp(value).isoformat()


@dataclass
class RunConfig:
    """Everything a worker needs, JSON-serialisable."""

    run_id: str
    strategy_ref: dict[str, str]
    data_path: str
    data_name: str
    data_fingerprint: str
    start: str | None
    end: str | None
    warmup_bars: int
    fixed_params: dict[str, Any]
    min_profit: float | None
    space: list[SearchDim]
    score: ScoreConfig
    optuna: OptunaConfig
    metric: str
    direction: str
    first_trial_number: int
    started_at: float
    deadline: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: the parent's prepared window saved for workers on its machine: {"path", "host"} (see load_prepared)
    local_copy: dict[str, str] | None = None
    #: the strategy's id (compared on resume without loading a stored strategy)
    strategy_id: str = ""

    @property
    def objectives(self) -> list[Objective]:
        """The run's objectives (one: the target); the first is :attr:`metric` / :attr:`direction`."""
        return run_objectives(self.optuna)

    @property
    def constraints(self) -> list[Constraint]:
        return parse_constraints(self.optuna.constraints)

    # -- what the worker rebuilds ----------------------------------------
    def load_strategy(self, trust: TrustPolicy | None = None) -> Strategy:
        """The run's strategy, if ``trust`` (the worker's key and allowed modules) accepts the study's reference."""
        return strategy_from_ref(self.strategy_ref, trust)

    def load_prepared(self, data_path: str | None = None) -> PreparedData:
        """Load and window the run's data; refuse data whose fingerprint differs from the run's.

        A worker on the parent's machine reads the parent's already validated
        window (:meth:`PreparedData.load`, milliseconds) instead of parsing the
        CSV again (seconds on a million bars); others, and ``data_path``, load
        the source.
        """
        copy = self.local_copy
        if data_path is None and copy and copy.get("host") == host_id() and os.path.exists(copy["path"]):
            path = copy["path"]
            prepared = PreparedData.load(path)
        else:
            path = data_path or self.data_path
            prepared = prepare(load_data(path, name=path), self.start, self.end, self.warmup_bars)
        got = fingerprint(prepared)
        if got != self.data_fingerprint:
            raise DataError(
                f"data {path!r} differs from the study's data {self.data_name!r}: "
                f"fingerprint {got[:16]}… != {self.data_fingerprint[:16]}… (SHA-256 of the prepared OHLCV window)"
            )
        return prepared

    # -- (de)serialisation ------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["score"] = self.score.to_dict()
        d["optuna"] = self.optuna.to_dict()
        d["space"] = [asdict(s) for s in self.space]
        return json.loads(json.dumps(d))  # proves it is plain JSON (tuples -> lists)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "RunConfig":
        d = dict(d)
        d["score"] = ScoreConfig.from_dict(d["score"])
        d["optuna"] = OptunaConfig.from_dict(d["optuna"])
        d["space"] = [
            SearchDim(**{**s, "choices": None if s.get("choices") is None else tuple(s["choices"])}) for s in d["space"]
        ]
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def strategy_to_ref(strategy_spec: Any, strategy: Strategy, trust_key: str | None = None) -> dict[str, str]:
    """How a worker finds the strategy: its id / plug-in name / import path, or the object itself pickled.

    An id registered at run time (``@register_strategy`` in a notebook cell) is
    unknown to a fresh worker process, so that strategy travels as an object too.
    With the run's ``trust_key`` the reference carries ``"hmac"``, the tag that
    lets workers holding the key accept it (:mod:`._trust`); the key is not stored.
    """
    if isinstance(strategy_spec, str) and not is_registered_id(strategy_spec):
        ref = {"spec": strategy_spec}
        if trust_key is not None and ":" in strategy_spec:  # an import path; ids and plug-in names need no tag
            ref["hmac"] = sign_spec(trust_key, strategy_spec)
        return ref
    import cloudpickle

    try:
        blob = cloudpickle.dumps(strategy)
        cloudpickle.loads(blob)
    except Exception as exc:  # any pickling failure means workers cannot get this object
        raise StrategyError(
            f"strategy {strategy!r} cannot be sent to worker processes: {type(exc).__name__}: {exc}. "
            "It must be picklable by value: do not keep open files, locks, sockets or database connections "
            "on the strategy object or in notebook globals that its code uses (open them inside run()), or move "
            "it to an importable module and pass 'package.module:ClassName'."
        ) from None
    warn_secret_globals(strategy)
    ref = {"pickle": base64.b64encode(blob).decode("ascii")}
    if trust_key is not None:
        ref["hmac"] = sign_pickle(trust_key, blob)
    return ref


def strategy_from_ref(ref: Mapping[str, str], trust: TrustPolicy | None = None) -> Strategy:
    """The strategy of a study's reference; ``trust`` checks it before anything is unpickled or imported.

    ``trust=None`` is the policy of a worker given no key and no allowed module.
    """
    trust = trust if trust is not None else TrustPolicy()
    if "spec" in ref:
        trust.check_spec(str(ref["spec"]), ref.get("hmac"))
        return get_strategy(ref["spec"])
    try:
        blob = base64.b64decode(ref["pickle"], validate=True)
    except (KeyError, TypeError, ValueError):
        reason = "this study's strategy reference is neither a 'spec' nor a base64 'pickle'; recreate the study"
        raise ConfigError(reason, field="strategy", reason=reason) from None
    trust.check_pickle(blob, ref.get("hmac"))
    import cloudpickle

    return get_strategy(cloudpickle.loads(blob))


def store_run_config(storage: BaseStorage, study_id: int, cfg: RunConfig) -> None:
    storage.set_study_user_attr(study_id, CONFIG_ATTR, cfg.to_json())


def resume_differences(previous: RunConfig, new: RunConfig) -> list[str]:
    """What differs between the run that filled a study and a run that resumes it, in words.

    Trials of one study must answer the same question: same data window, same
    strategy, search space, fixed parameters, target and filters.  Budget,
    sampler, seed and workers may change between runs.
    """
    diffs: list[str] = []

    def differ(label: str, old: Any, now: Any) -> None:
        if old != now:
            diffs.append(f"{label} {old!r} -> {now!r}")

    if previous.data_fingerprint != new.data_fingerprint:
        diffs.append(f"data {previous.data_name!r} (fingerprint {previous.data_fingerprint[:12]}…) -> "
                     f"{new.data_name!r} (fingerprint {new.data_fingerprint[:12]}…)")
    differ("start", previous.start, new.start)
    differ("end", previous.end, new.end)
    differ("warmup_bars", previous.warmup_bars, new.warmup_bars)
    differ("strategy", previous.strategy_id or _ref_label(previous.strategy_ref),
           new.strategy_id or _ref_label(new.strategy_ref))
    old_space = {d.name: d for d in previous.space}
    new_space = {d.name: d for d in new.space}
    for name in sorted(set(old_space) | set(new_space)):
        a, b = old_space.get(name), new_space.get(name)
        if a != b:
            diffs.append(f"search space of {name!r}: {_dim_label(a)} -> {_dim_label(b)}")
    differ("fixed_params", previous.fixed_params, new.fixed_params)
    differ("target", previous.metric, new.metric)
    differ("objectives", [(o.metric, o.direction) for o in previous.objectives],
           [(o.metric, o.direction) for o in new.objectives])
    differ("constraints", [c.text for c in previous.constraints], [c.text for c in new.constraints])
    differ("min_profit", previous.min_profit, new.min_profit)
    if new.metric == "score":
        differ("score settings", previous.score.to_dict(), new.score.to_dict())
    return diffs


def _ref_label(ref: Mapping[str, str]) -> str:
    return ref.get("spec") or "a pickled strategy"


def _dim_label(d: SearchDim | None) -> str:
    if d is None:
        return "not optimised"
    if d.kind == "categorical":
        return f"choices {list(d.choices or ())}"
    return f"{d.kind} {d.low}..{d.high}" + (f" step {d.step}" if d.step is not None else "")


def previous_run_config(storage: BaseStorage, study_id: int) -> RunConfig | None:
    """The configuration of the run that last used this study (None for a new or foreign study)."""
    raw = storage.get_study_user_attrs(study_id).get(CONFIG_ATTR)
    return None if raw is None else RunConfig.from_json(raw)


def load_run_config(storage: BaseStorage, study_id: int) -> RunConfig:
    raw = storage.get_study_user_attrs(study_id).get(CONFIG_ATTR)
    if raw is None:
        raise ConfigError("this study was not created by merlin_kit (it has no 'merlin.config' user attribute)")
    return RunConfig.from_json(raw)
