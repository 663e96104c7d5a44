"""Strategy registry: built-in ids, ``"package.module:Name"`` and strategy objects.

``get_strategy`` is the one place that turns whatever a user wrote (an id, an
import path, a class or an instance) into a strategy instance, so the CLI, the
engine and the notebook panel resolve strategies identically.
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import StrategyError
from .base import IndicatorCache, Param, Strategy, StrategyOutput, empty_output, output_from_kernel
from .s01_trailing_ma import S01TrailingMA
from .s04_stochrsi import S04StochRSI

_REGISTRY: dict[str, type[Strategy]] = {}


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Register a strategy class under its ``id`` (usable as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Strategy)) or not cls.id:
        raise StrategyError(f"{cls!r} is not a Strategy subclass with an id")
    _REGISTRY[cls.id] = cls
    return cls


def list_strategies() -> list[str]:
    """Ids of the registered strategies."""
    return sorted(_REGISTRY)


def get_strategy(spec: Any) -> Strategy:
    """Resolve ``spec`` (id, ``"pkg.module:Name"``, Strategy class or instance) to an instance."""
    if isinstance(spec, Strategy):
        return spec
    if isinstance(spec, type) and issubclass(spec, Strategy):
        return spec()
    if not isinstance(spec, str) or not spec.strip():
        raise StrategyError(f"a strategy is an id, 'package.module:Name', a Strategy class or instance; got {spec!r}")
    spec = spec.strip()
    if spec in _REGISTRY:
        return _REGISTRY[spec]()
    if ":" in spec:
        return _import_strategy(spec)
    raise StrategyError(
        f"unknown strategy {spec!r}; built-in: {', '.join(list_strategies())}; "
        "or give a user strategy as 'package.module:ClassName'"
    )


def _import_strategy(spec: str) -> Strategy:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StrategyError(f"cannot import module {module_name!r} for strategy {spec!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise StrategyError(f"module {module_name!r} has no attribute {attr!r} (strategy {spec!r})") from None
    if isinstance(obj, Strategy):
        return obj
    if isinstance(obj, type) and issubclass(obj, Strategy):
        return obj()
    raise StrategyError(f"{spec!r} is {type(obj).__name__}, not a merlin_kit Strategy subclass or instance")


register_strategy(S01TrailingMA)
register_strategy(S04StochRSI)

__all__ = [
    "IndicatorCache", "Param", "Strategy", "StrategyOutput", "S01TrailingMA", "S04StochRSI",
    "empty_output", "get_strategy", "list_strategies", "output_from_kernel", "register_strategy",
]
