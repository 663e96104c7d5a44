"""The strategy contract: a parameter schema plus a run over arrays.

A strategy is an object with an ``id``, a ``params`` schema (tuple of
:class:`Param`) and a ``run(data, params, cache)`` method that returns a
:class:`StrategyOutput`.  Everything else in the kit (validation, search spaces,
the notebook panel, the CLI) is derived from the schema, so a user strategy gets
all of it by declaring its parameters once.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, Mapping, Sequence

import numpy as np

from ..data import PreparedData
from ..errors import ParameterError, StrategyError

if TYPE_CHECKING:
    import pandas as pd

ParamKind = Literal["int", "float", "choice", "bool"]


@dataclass(frozen=True)
class Param:
    """One strategy parameter: its type, default, hard limits and default search range.

    ``low``/``high`` are hard limits (a value outside them is an error);
    ``opt_low``/``opt_high``/``opt_step`` are the default optimisation range and
    ``choices`` the allowed values of a ``choice`` parameter.  ``optimize`` says
    whether the parameter is optimised unless the user says otherwise.
    """

    name: str
    kind: ParamKind
    default: Any
    low: float | None = None
    high: float | None = None
    opt_low: float | None = None
    opt_high: float | None = None
    opt_step: float | None = None
    choices: tuple[Any, ...] | None = None
    optimize: bool = False
    description: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("int", "float", "choice", "bool"):
            raise StrategyError(f"parameter {self.name!r}: kind must be int, float, choice or bool, got {self.kind!r}")
        if self.kind == "choice" and not self.choices:
            raise StrategyError(f"parameter {self.name!r}: a choice parameter needs choices")
        if self.kind == "bool" and self.choices is None:
            object.__setattr__(self, "choices", (False, True))
        object.__setattr__(self, "default", self.validate(self.default))

    def describe_allowed(self) -> str:
        """Human-readable description of the allowed values (for error messages)."""
        if self.kind in ("choice", "bool"):
            return "one of " + ", ".join(repr(c) for c in (self.choices or ()))
        lo = "-inf" if self.low is None else _fmt(self.low)
        hi = "inf" if self.high is None else _fmt(self.high)
        return f"{'an integer' if self.kind == 'int' else 'a number'} in [{lo}, {hi}]"

    def validate(self, value: Any) -> Any:
        """Return ``value`` coerced to this parameter's type, or raise ParameterError."""
        if self.kind == "bool":
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
            raise ParameterError(f"parameter {self.name!r} must be True or False, got {value!r}")
        if self.kind == "choice":
            assert self.choices is not None
            for choice in self.choices:
                if value == choice or (
                    isinstance(value, str) and isinstance(choice, str) and value.upper() == choice.upper()
                ):
                    return choice
            raise ParameterError(f"parameter {self.name!r} got {value!r}; allowed: {self.describe_allowed()}")
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ParameterError(
                f"parameter {self.name!r} must be {self.describe_allowed()}, got {value!r} ({type(value).__name__})"
            )
        number = float(value)
        if not math.isfinite(number):
            raise ParameterError(f"parameter {self.name!r} must be finite, got {value!r}")
        if self.kind == "int":
            if number != math.floor(number):
                raise ParameterError(f"parameter {self.name!r} must be an integer, got {value!r}")
            number = int(number)
        if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
            raise ParameterError(f"parameter {self.name!r} = {value!r} is out of limits: must be {self.describe_allowed()}")
        return number


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


@dataclass
class StrategyOutput:
    """What a strategy run returns: closed trades (parallel arrays) and per-bar curves.

    Indices refer to bars of the :class:`PreparedData` the strategy ran on.
    ``direction`` is +1 for long and -1 for short.  ``balance`` is realised
    equity, ``equity`` is mark-to-market; both span every bar of the window.
    """

    direction: np.ndarray
    entry_idx: np.ndarray
    exit_idx: np.ndarray
    entry_price: np.ndarray
    exit_price: np.ndarray
    size: np.ndarray
    net_pnl: np.ndarray
    profit_pct: np.ndarray
    balance: np.ndarray
    equity: np.ndarray
    initial_capital: float

    @property
    def n_trades(self) -> int:
        return int(self.direction.shape[0])

    def check(self, n_bars: int, where: str = "strategy") -> None:
        """Raise StrategyError if the arrays are malformed (user strategies are checked once, early)."""
        n = self.direction.shape[0]
        trade_arrays = ("entry_idx", "exit_idx", "entry_price", "exit_price", "size", "net_pnl", "profit_pct")
        for name in trade_arrays:
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.ndim != 1 or arr.shape[0] != n:
                raise StrategyError(f"{where}: trade array {name!r} must be a 1-D array of {n} values (one per trade)")
        for name in ("balance", "equity"):
            arr = getattr(self, name)
            if not isinstance(arr, np.ndarray) or arr.shape != (n_bars,):
                raise StrategyError(f"{where}: curve {name!r} must be a 1-D array with one value per bar ({n_bars})")
            if not np.all(np.isfinite(arr)):
                bad = int(np.flatnonzero(~np.isfinite(arr))[0])
                raise StrategyError(f"{where}: curve {name!r} has a non-finite value at bar {bad}")
        if n:
            if not np.all(np.isin(self.direction, (-1, 1))):
                raise StrategyError(f"{where}: trade directions must be +1 (long) or -1 (short)")
            if np.any(self.entry_idx < 0) or np.any(self.exit_idx >= n_bars) or np.any(self.exit_idx < self.entry_idx):
                raise StrategyError(f"{where}: trade bar indices must satisfy 0 <= entry_idx <= exit_idx < n_bars")
            for name in ("entry_price", "exit_price", "size", "net_pnl", "profit_pct"):
                if not np.all(np.isfinite(getattr(self, name))):
                    raise StrategyError(f"{where}: trade array {name!r} has non-finite values")
        if not (math.isfinite(self.initial_capital) and self.initial_capital > 0):
            raise StrategyError(f"{where}: initial_capital must be a positive number")


#: a backtest that misses several indicators on at least this many bars computes them on threads
PARALLEL_MIN_BARS = 100_000
#: default cap of those threads
DEFAULT_THREADS = min(4, os.cpu_count() or 1)

_pool: ThreadPoolExecutor | None = None
_pool_pid = 0
_pool_lock = threading.Lock()


def _indicator_pool(threads: int) -> ThreadPoolExecutor:
    """The process's indicator thread pool (re-created in a forked child, whose copy has no threads)."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid() or _pool._max_workers < threads:
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="merlin-indicators")
            _pool_pid = os.getpid()
        return _pool


class IndicatorCache:
    """A bounded LRU cache of indicator series for one prepared window.

    An optimisation evaluates thousands of parameter sets on the same bars; a
    moving average depends only on (kind, length), so reusing it across trials
    removes most of the indicator cost.  :meth:`get_many` computes the misses of
    one run concurrently on long series (the kernels release the GIL): on
    1,000,000 bars the five or six indicators of an S01 run are independent
    latency-bound loops.  ``threads`` caps that (default: every CPU, at most 4);
    optimisation workers use 1, since their parallelism is one process per core.
    """

    def __init__(self, max_bytes: int = 256 * 2**20, *, threads: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.threads = max(1, threads if threads is not None else DEFAULT_THREADS)
        self._items: OrderedDict[tuple[Any, ...], np.ndarray] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[Any, ...], compute: Callable[[], np.ndarray]) -> np.ndarray:
        """Return the cached array for ``key``, computing (and storing) it on a miss."""
        arr = self._items.get(key)
        if arr is not None:
            self._items.move_to_end(key)
            self.hits += 1
            return arr
        self.misses += 1
        return self._store(key, compute())

    def get_many(
        self, requests: Mapping[tuple[Any, ...], Callable[[], np.ndarray]], *, bars: int
    ) -> dict[tuple[Any, ...], np.ndarray]:
        """:meth:`get` for several independent series of ``bars`` bars; misses may run on threads."""
        missing = [key for key in requests if key not in self._items]
        if len(missing) < 2 or bars < PARALLEL_MIN_BARS or self.threads < 2:
            return {key: self.get(key, compute) for key, compute in requests.items()}
        pool = _indicator_pool(self.threads)
        futures = {key: pool.submit(requests[key]) for key in missing}
        computed = {key: future.result() for key, future in futures.items()}
        out: dict[tuple[Any, ...], np.ndarray] = {}
        for key in requests:
            if key in computed:
                self.misses += 1
                out[key] = self._store(key, computed[key])
            else:
                out[key] = self.get(key, requests[key])
        return out

    def _store(self, key: tuple[Any, ...], arr: np.ndarray) -> np.ndarray:
        arr.flags.writeable = False
        self._items[key] = arr
        self._bytes += arr.nbytes
        while self._bytes > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self._bytes -= old.nbytes
        return arr


class Strategy:
    """Base class of strategies: subclasses set ``id``, ``name``, ``params`` and implement ``run``.

    ``run`` receives validated parameters (every name present, coerced to its
    type) and must not modify ``data``.  ``initial_capital(params)`` tells the
    metrics what 100 % is.
    """

    id: ClassVar[str] = ""
    name: ClassVar[str] = ""
    params: ClassVar[tuple[Param, ...]] = ()

    def initial_capital(self, params: Mapping[str, Any]) -> float:
        return 100.0

    def run(self, data: PreparedData, params: Mapping[str, Any], cache: IndicatorCache | None = None) -> StrategyOutput:
        raise NotImplementedError

    # -- schema helpers -------------------------------------------------
    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise ParameterError(f"{self.id or type(self).__name__} has no parameter {name!r}; valid: {', '.join(self.param_names())}")

    def param_names(self) -> list[str]:
        return [p.name for p in self.params]

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def describe(self) -> "pd.DataFrame":
        """The parameter schema as a table: what ``param_ranges`` / ``--params`` can name, and their defaults.

        One row per parameter: ``name``, ``type``, ``default``, hard limits
        (``low``, ``high``), the default search range (``opt_low``, ``opt_high``,
        ``opt_step``; ``choices`` for choice and bool parameters), ``optimized``
        (searched when the user names no parameters) and ``description``.
        """
        import pandas as pd

        rows = [{
            "name": p.name, "type": p.kind, "default": p.default, "low": p.low, "high": p.high,
            "opt_low": p.opt_low, "opt_high": p.opt_high, "opt_step": p.opt_step,
            "choices": None if p.choices is None else ", ".join(map(str, p.choices)),
            "optimized": p.optimize, "description": p.description,
        } for p in self.params]
        columns = ["name", "type", "default", "low", "high", "opt_low", "opt_high", "opt_step", "choices",
                   "optimized", "description"]
        return pd.DataFrame(rows, columns=columns, dtype=object)  # object: an int default stays an int

    def validate_params(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Defaults overlaid with ``params``; unknown names and bad values raise ParameterError."""
        merged = self.defaults()
        if params:
            unknown = [k for k in params if k not in merged]
            if unknown:
                raise ParameterError(
                    f"unknown parameter(s) {', '.join(map(repr, unknown))} for strategy "
                    f"{self.id or type(self).__name__}; valid: {', '.join(self.param_names())}"
                )
            for key, value in params.items():
                merged[key] = self.param(key).validate(value)
        return merged

    def __repr__(self) -> str:
        return f"<Strategy {self.id or type(self).__name__}>"


def empty_output(n_bars: int, capital: float) -> StrategyOutput:
    """A run with no trades and flat curves (used by strategies that cannot trade)."""
    flat = np.full(n_bars, capital)
    e_i = np.empty(0, dtype=np.int64)
    e_f = np.empty(0, dtype=np.float64)
    return StrategyOutput(np.empty(0, dtype=np.int8), e_i, e_i.copy(), e_f, e_f.copy(), e_f.copy(), e_f.copy(), e_f.copy(), flat, flat.copy(), capital)


def output_from_kernel(result: Sequence[np.ndarray], capital: float) -> StrategyOutput:
    """Wrap the tuple returned by a numba kernel (trades..., balance, equity) in a StrategyOutput."""
    direction, entry_idx, exit_idx, entry_price, exit_price, size, net_pnl, profit_pct, balance, equity = result
    return StrategyOutput(direction, entry_idx, exit_idx, entry_price, exit_price, size, net_pnl, profit_pct, balance, equity, capital)


__all__ = ["Param", "ParamKind", "Strategy", "StrategyOutput", "IndicatorCache", "empty_output", "output_from_kernel"]
