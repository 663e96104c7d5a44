"""Sweeps: non-adaptive searches (grid, random, QMC) whose points are known before any trial runs.

Ask/tell costs ~10 ms of storage bookkeeping per trial (each suggest and each
attr is its own record); a warm backtest costs ~0.25 ms.  A sweep needs no
sampler feedback, so:

* every process derives the same point sequence from the run's configuration
  (:class:`SweepPlan`: a grid enumerated, or a seeded random / scrambled Sobol
  sequence drawn in fixed chunks, so point ``i`` is the same in every process);
* the parent queues one *ticket* per batch of points (:class:`SweepQueue`): a
  WAITING trial marked with :data:`~._attrs.SWEEP_TICKET_ATTR`; a worker claims
  one through the storage's atomic WAITING -> RUNNING transition (exactly one
  worker gets it), evaluates the batch with one Backtester and writes every
  point but the last as a complete trial in one storage operation
  (:func:`write_trials`: one locked journal append), then turns the ticket itself
  into the last point (its commit record);
* a worker killed mid-batch leaves its ticket RUNNING; the reaper fails it, the
  parent queues a replacement (:meth:`SweepQueue.replace_lost`) and whoever
  claims it skips the points of that batch already written
  (:data:`~._attrs.SWEEP_POINT_ATTR` and exact parameter values), so no point is
  lost or written twice.  A lost ticket counts for nothing
  (:func:`~._attrs.is_lost_ticket`);
* a resumed study skips every point whose parameters a counted trial already has.
"""

from __future__ import annotations

import math
import warnings
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

import numpy as np
from optuna.distributions import (
    BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution, distribution_to_json,
)
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.storages.journal import JournalStorage
from optuna.trial import FrozenTrial, TrialState

from ._attrs import (
    CANCELLED_ATTR, ERROR_ATTR, OWNER_ATTR, SWEEP_POINT_ATTR, SWEEP_TICKET_ATTR, counts_towards_budget,
    is_lost_ticket,
)
from .config import OptunaConfig, SearchDim, grid_size, stepped_count

#: random and QMC points are drawn in seeded chunks of this many, so point i never depends on the batch size
CHUNK = 256
#: a batch is sized to about this much backtesting: Stop and the deadline are checked between batches
BATCH_SECONDS = 0.2
MIN_BATCH, MAX_BATCH = 16, 2048


def distributions(space: Sequence[SearchDim]) -> dict[str, BaseDistribution]:
    """The distributions :meth:`~._worker.TrialRunner.suggest` records for ``space`` (same constructors)."""
    out: dict[str, BaseDistribution] = {}
    for d in space:
        if d.kind == "categorical":
            out[d.name] = CategoricalDistribution(list(d.choices or ()))
        elif d.kind == "int":
            out[d.name] = IntDistribution(int(d.low), int(d.high), step=int(d.step or 1))
        else:
            out[d.name] = FloatDistribution(float(d.low), float(d.high), step=d.step)
    return out


def sweep_settings(cfg: OptunaConfig, backtest_seconds: float, seed: int) -> dict[str, Any]:
    """What every process of the run must agree on (RunConfig.extra["sweep"]): batch size and seed."""
    batch = cfg.sweep_batch or min(MAX_BATCH, max(MIN_BATCH, int(BATCH_SECONDS / max(backtest_seconds, 1e-6))))
    return {"sweep": {"batch": int(batch), "seed": int(cfg.seed if cfg.seed is not None else seed)}}


class SweepPlan:
    """The run's points in order: ``n`` of them, each with a stable key and its parameters."""

    def __init__(self, space: Sequence[SearchDim], sampler: str, n: int, seed: int, batch: int) -> None:
        self.space = list(space)
        self.sampler = sampler
        self.n = int(n)
        self.seed = int(seed)
        self.batch = int(batch)
        self.dists = distributions(self.space)
        #: values per dimension (numeric: stepped count; None: continuous)
        self.counts = [len(d.choices or ()) if d.kind == "categorical" else
                       (stepped_count(d) if d.kind == "int" or d.step is not None else None) for d in self.space]
        self._grid: np.ndarray | None = None
        if sampler == "grid":
            size = grid_size(self.space)
            if self.n < size:  # a seeded subset of exactly n points, in grid order
                rng = np.random.default_rng([self.seed, size])
                self._grid = np.sort(rng.choice(size, self.n, replace=False))

    @classmethod
    def of(cls, run_config: Any) -> "SweepPlan":
        """The plan of a run (a :class:`~._runconfig.RunConfig` whose ``extra`` has the sweep settings)."""
        o, s = run_config.optuna, run_config.extra["sweep"]
        return cls(run_config.space, o.sampler, int(o.n_trials), s["seed"], s["batch"])

    @property
    def n_batches(self) -> int:
        return math.ceil(self.n / self.batch)

    def batch_range(self, k: int) -> range:
        return range(k * self.batch, min((k + 1) * self.batch, self.n))

    def points(self, positions: range) -> list[tuple[int, dict[str, Any]]]:
        """(stable key, params) of the points at ``positions`` of the sequence."""
        if not len(positions):
            return []
        lo, hi = positions.start, positions.stop
        if self.sampler == "grid":
            keys = np.arange(lo, hi) if self._grid is None else self._grid[lo:hi]
            columns = self._grid_columns(keys)
        else:
            first, last = lo // CHUNK, (hi - 1) // CHUNK
            drawn = np.concatenate([self._chunk(c) for c in range(first, last + 1)])
            drawn = drawn[lo - first * CHUNK: hi - first * CHUNK]
            keys = np.arange(lo, hi)
            columns = [self._scale(j, drawn[:, j]) for j in range(len(self.space))]
        names = [d.name for d in self.space]
        values = [[self._value(j, v) for v in col] for j, col in enumerate(columns)]
        return [(int(key), dict(zip(names, row))) for key, row in zip(keys, zip(*values))]

    def _grid_columns(self, keys: np.ndarray) -> list[np.ndarray]:
        """Each dimension's value index (mixed radix, the last dimension fastest, as itertools.product)."""
        columns: list[np.ndarray] = []
        rest = keys.astype(np.int64)
        for count in reversed(self.counts):
            columns.append(rest % count)
            rest = rest // count
        return columns[::-1]

    def _chunk(self, c: int) -> np.ndarray:
        """Chunk ``c`` of uniform [0, 1) draws, one column per dimension (seeded: the same everywhere)."""
        d = len(self.space)
        if self.sampler == "qmc":
            from scipy.stats import qmc  # checked by config.check_sweep
            engine = qmc.Sobol(d, scramble=True, seed=self.seed)
            if c:
                engine.fast_forward(c * CHUNK)
            with warnings.catch_warnings():  # chunks are not powers of two: Sobol's balance warning
                warnings.simplefilter("ignore", UserWarning)
                return engine.random(CHUNK)
        return np.random.default_rng([self.seed, c]).random((CHUNK, d))

    def _scale(self, j: int, u: np.ndarray) -> np.ndarray:
        """Uniform draws -> value indices (stepped and categorical) or values (continuous floats)."""
        count = self.counts[j]
        if count is None:
            d = self.space[j]
            return float(d.low) + u * (float(d.high) - float(d.low))
        return np.minimum((u * count).astype(np.int64), count - 1)

    def _value(self, j: int, v: Any) -> Any:
        d = self.space[j]
        dist = self.dists[d.name]
        if d.kind == "categorical":
            return dist.choices[int(v)]  # type: ignore[attr-defined]
        if d.kind == "int":
            return int(d.low) + int(v) * int(d.step or 1)
        if d.step is None:
            return float(v)
        # Optuna's own rounding (k * step + low), clamped to the distribution's (adjusted) high
        return min(max(float(v) * float(d.step) + float(d.low), dist.low), dist.high)  # type: ignore[attr-defined]

    def key_of(self, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """What makes two points the same: their exact parameter values (None: not a point of this space)."""
        try:
            return tuple(params[d.name] for d in self.space)
        except KeyError:
            return None


def done_keys(trials: Iterable[FrozenTrial], plan: SweepPlan, run_id: str) -> set[tuple[Any, ...]]:
    """The points an earlier run's counted trial already has (a resumed sweep skips them).

    Only earlier runs' trials: a random sweep may draw the same point twice, and evaluates it twice
    as ask/tell would (the budget is exact).
    """
    keys = (plan.key_of(t.params) for t in trials
            if counts_towards_budget(t) and (t.user_attrs.get(OWNER_ATTR) or {}).get("run") != run_id)
    return {k for k in keys if k is not None}


def written_points(trials: Iterable[FrozenTrial], run_id: str) -> set[int]:
    """The point indices this run has written (a re-done batch skips them)."""
    return {t.system_attrs[SWEEP_POINT_ATTR] for t in trials
            if SWEEP_POINT_ATTR in t.system_attrs and counts_towards_budget(t)
            and (t.user_attrs.get(OWNER_ATTR) or {}).get("run") == run_id}


def write_trials(storage: BaseStorage, study_id: int, trials: Sequence[FrozenTrial],
                 commit: tuple[int, FrozenTrial] | None = None) -> None:
    """Add finished (or WAITING) trials, then ``commit`` = (claimed ticket's id, the trial it becomes).

    On a journal (file or Redis) everything is one locked append whose lines are
    exactly those Optuna writes for ``study.add_trial`` and for a running trial's
    ``set_*`` calls, so Optuna, the dashboard and the kit read them as any trial;
    the ticket's state line comes last.  A writer killed mid-append leaves
    complete lines and at most one torn last line (ignored and repaired by
    :mod:`._journal`): the ticket stays unfinished and the re-done batch skips
    the trials that made it.  Other storages: one call per trial and per field.
    """
    if not isinstance(storage, JournalStorage):
        for t in trials:
            storage.create_new_trial(study_id, template_trial=t)
        if commit is not None:
            _commit_calls(storage, *commit)
        return
    from optuna.storages.journal._storage import JournalOperation as Op  # the format's op codes

    as_json: dict[int, str] = {}  # a batch's trials share their distribution objects: each is encoded once
    logs = [(Op.CREATE_TRIAL, _create_log(study_id, t, as_json)) for t in trials]
    if commit is not None:
        tid, t = commit
        logs += [(Op.SET_TRIAL_PARAM, {"trial_id": tid, "param_name": k, "distribution": distribution_to_json(d),
                                       "param_value_internal": d.to_internal_repr(t.params[k])})
                 for k, d in t.distributions.items()]
        logs += [(Op.SET_TRIAL_USER_ATTR, {"trial_id": tid, "user_attr": {k: v}}) for k, v in t.user_attrs.items()]
        logs += [(Op.SET_TRIAL_INTERMEDIATE_VALUE, {"trial_id": tid, "step": k, "intermediate_value": v})
                 for k, v in t.intermediate_values.items()]
        logs += [(Op.SET_TRIAL_SYSTEM_ATTR, {"trial_id": tid, "system_attr": {k: v}})
                 for k, v in t.system_attrs.items()]
        logs.append((Op.SET_TRIAL_STATE_VALUES, {
            "trial_id": tid, "state": t.state, "values": None if t.value is None else [t.value],
            "datetime_complete": datetime.now(tz=timezone.utc).isoformat(timespec="microseconds")}))
    if not logs:
        return
    worker_id = storage._replay_result.worker_id
    with storage._thread_lock:
        storage._backend.append_logs([{"op_code": op, "worker_id": worker_id, **log} for op, log in logs])
        try:
            storage._sync_with_backend()
        except UpdateFinishedTrialError:  # the ticket was failed meanwhile: read our remaining lines, then say so
            while True:
                try:
                    storage._sync_with_backend()
                    break
                except UpdateFinishedTrialError:
                    continue
            raise


def _commit_calls(storage: BaseStorage, tid: int, t: FrozenTrial) -> None:
    """The ticket becomes trial ``t``, one storage call per field; its state is written last."""
    for name, dist in t.distributions.items():
        storage.set_trial_param(tid, name, dist.to_internal_repr(t.params[name]), dist)
    for key, value in t.user_attrs.items():
        storage.set_trial_user_attr(tid, key, value)
    for step, value in t.intermediate_values.items():
        storage.set_trial_intermediate_value(tid, step, value)
    for key, value in t.system_attrs.items():
        storage.set_trial_system_attr(tid, key, value)
    storage.set_trial_state_values(tid, state=t.state, values=None if t.value is None else [t.value])


def _create_log(study_id: int, t: FrozenTrial, as_json: dict[int, str]) -> dict[str, Any]:
    """The fields of a CREATE_TRIAL journal line for template trial ``t`` (as Optuna 5 writes them);
    ``as_json`` memoises the JSON of distribution objects by identity."""
    def when(dt: Any) -> str | None:
        return None if dt is None else dt.astimezone(timezone.utc).isoformat(timespec="microseconds")

    log: dict[str, Any] = {
        "study_id": study_id, "state": t.state, "value": t.value, "values": None,
        "datetime_start": when(t.datetime_start),
        "distributions": {k: as_json.get(id(d)) or as_json.setdefault(id(d), distribution_to_json(d))
                          for k, d in t.distributions.items()},
        "params": {k: t.distributions[k].to_internal_repr(v) for k, v in t.params.items()},
        "user_attrs": t.user_attrs, "system_attrs": t.system_attrs,
        "intermediate_values": t.intermediate_values,
    }
    if t.datetime_complete is not None:
        log["datetime_complete"] = when(t.datetime_complete)
    return log


def ticket(run_id: str, batch: int, replaces: int | None = None) -> FrozenTrial:
    """A WAITING trial that stands for batch ``batch`` of run ``run_id`` until a worker claims it."""
    return FrozenTrial(number=-1, state=TrialState.WAITING, value=None, datetime_start=None,
                       datetime_complete=None, params={}, distributions={}, user_attrs={},
                       system_attrs={SWEEP_TICKET_ATTR: {"run": run_id, "batch": batch, "replaces": replaces}},
                       intermediate_values={}, trial_id=-1)


def run_tickets(trials: Iterable[FrozenTrial], run_id: str) -> list[FrozenTrial]:
    return [t for t in trials if (t.system_attrs.get(SWEEP_TICKET_ATTR) or {}).get("run") == run_id]


def unreplaced_lost(storage: BaseStorage, study_id: int, run_id: str) -> list[FrozenTrial]:
    """This run's lost tickets (FAIL, no point) that no later ticket replaces yet.

    Reads only the FAIL trials unless one of them is a lost ticket (then every trial, to see the
    replacements): cheap while nothing is lost, on a database too.
    """
    lost = [t for t in run_tickets(storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.FAIL,)),
                                   run_id) if is_lost_ticket(t) and CANCELLED_ATTR not in t.user_attrs]
    if not lost:
        return []
    tickets = run_tickets(storage.get_all_trials(study_id, deepcopy=False), run_id)
    replaced = {t.system_attrs[SWEEP_TICKET_ATTR].get("replaces") for t in tickets}
    return [t for t in lost if t._trial_id not in replaced]


def sweep_finished(storage: BaseStorage, study_id: int, run_id: str) -> bool:
    """No ticket of the run waits or runs, and every lost one has been replaced (and so re-done)."""
    open_tickets = run_tickets(storage.get_all_trials(study_id, deepcopy=False,
                                                      states=(TrialState.WAITING, TrialState.RUNNING)), run_id)
    return not open_tickets and not unreplaced_lost(storage, study_id, run_id)


def cancel(storage: BaseStorage, trial_id: int, run_id: str, why: str) -> None:
    """Retire a ticket unrun (FAIL with the cancelled mark: no result, counts for nobody)."""
    storage.set_trial_user_attr(trial_id, CANCELLED_ATTR, run_id)
    storage.set_trial_user_attr(trial_id, ERROR_ATTR, why)
    storage.set_trial_state_values(trial_id, state=TrialState.FAIL)


class SweepQueue:
    """The parent's side of a sweep: one ticket per batch with points to do; replacements for lost ones."""

    def __init__(self, storage: BaseStorage, study_id: int, run_config: Any) -> None:
        self.storage = storage
        self.study_id = study_id
        self.run_id = run_config.run_id
        self.plan = SweepPlan.of(run_config)
        #: points this run evaluates: the plan less those an earlier run of the study has (its progress budget)
        self.to_do = self.plan.n

    def fill(self) -> int:
        """Queue the run's batches (those with a point the study lacks); returns how many.

        Tickets an earlier, killed run left WAITING are retired first.
        """
        trials = self.storage.get_all_trials(self.study_id, deepcopy=False)
        for t in trials:
            if t.state == TrialState.WAITING and SWEEP_TICKET_ATTR in t.system_attrs:
                cancel(self.storage, t._trial_id, self.run_id, "cancelled: a ticket of an earlier sweep")
        done = done_keys(trials, self.plan, self.run_id)
        batches, self.to_do = [], 0
        for k in range(self.plan.n_batches):
            missing = (len(self.plan.batch_range(k)) if not done else
                       sum(self.plan.key_of(p) not in done for _, p in self.plan.points(self.plan.batch_range(k))))
            if missing:
                batches.append(k)
                self.to_do += missing
        write_trials(self.storage, self.study_id, [ticket(self.run_id, k) for k in batches])
        return len(batches)

    def replace_lost(self) -> int:
        """A ticket for every batch whose ticket was reaped (its worker died mid-batch); returns how many."""
        lost = unreplaced_lost(self.storage, self.study_id, self.run_id)
        write_trials(self.storage, self.study_id, [
            ticket(self.run_id, t.system_attrs[SWEEP_TICKET_ATTR]["batch"], t._trial_id) for t in lost])
        return len(lost)

    def finished(self) -> bool:
        """Every batch of the run is written (the end of a run whose workers are all remote)."""
        return sweep_finished(self.storage, self.study_id, self.run_id)

    def retire(self) -> None:
        """When the run ends (deadline, Stop): its tickets still WAITING are retired unrun."""
        for t in run_tickets(self.storage.get_all_trials(self.study_id, deepcopy=False,
                                                         states=(TrialState.WAITING,)), self.run_id):
            try:
                cancel(self.storage, t._trial_id, self.run_id, "cancelled: the sweep ended before this batch")
            except UpdateFinishedTrialError:  # claimed and finished meanwhile by a worker
                continue
