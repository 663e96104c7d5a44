"""Strategy registry: built-in ids, registered ids, installed plug-ins, ``"package.module:Name"`` and objects.

``get_strategy`` is the one place that turns whatever a user wrote (an id, an
import path, a class or an instance) into a strategy instance, so the CLI, the
engine and the notebook panel resolve strategies identically.  A string is
resolved in this order:

1. a built-in id (``s01_trailing_ma``, ``s04_stochrsi``);
2. an id registered at run time with :func:`register_strategy`;
3. the name of an installed plug-in: an entry point in the group
   ``merlin_kit.strategies`` (``[project.entry-points."merlin_kit.strategies"]``
   in the plug-in's ``pyproject.toml``), loaded lazily on first lookup/list;
4. an import path ``"package.module:Name"`` (a Strategy subclass or instance).

A plug-in that fails to import is reported with a warning naming it by
:func:`list_strategies` (which lists the others) and with a
:class:`~merlin_kit.errors.StrategyError` when it is asked for by name.
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from typing import Any

from ..errors import StrategyError
from .base import IndicatorCache, Param, Strategy, StrategyOutput, empty_output, output_from_kernel
from .s01_trailing_ma import S01TrailingMA
from .s04_stochrsi import S04StochRSI

#: entry-point group of installed strategy plug-ins
ENTRY_POINT_GROUP = "merlin_kit.strategies"

_BUILTIN: dict[str, type[Strategy]] = {}
_REGISTRY: dict[str, type[Strategy]] = {}


@dataclass
class _Plugin:
    """One entry point of the group; ``obj`` once loaded, ``error`` if loading failed."""

    name: str
    value: str
    dist: str
    entry_point: Any
    obj: Any = None
    error: str | None = None
    warned: bool = False

    def describe(self) -> str:
        return f"plug-in {self.name!r} (entry point '{self.name} = {self.value}' of {self.dist})"


_plugins: dict[str, _Plugin] | None = None


def _is_strategy_class(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, Strategy)


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Register a strategy class under its ``id`` (usable as a decorator).

    Registering the same id again replaces the earlier class (re-running a
    notebook cell); a built-in id cannot be taken.
    """
    if not _is_strategy_class(cls) or not isinstance(cls.id, str) or not cls.id.strip():
        raise StrategyError(f"{cls!r} is not a Strategy subclass with an id (set the class attribute id = 'my_strategy')")
    if cls.id in _BUILTIN and _BUILTIN[cls.id] is not cls:
        raise StrategyError(f"strategy id {cls.id!r} is taken by a built-in strategy; choose another id")
    _REGISTRY[cls.id] = cls
    return cls


def unregister_strategy(strategy_id: str) -> None:
    """Remove a strategy registered with :func:`register_strategy` (built-ins stay)."""
    if strategy_id in _BUILTIN:
        raise StrategyError(f"{strategy_id!r} is a built-in strategy and cannot be unregistered")
    _REGISTRY.pop(strategy_id, None)


def is_registered_id(spec: Any) -> bool:
    """True when ``spec`` is an id registered at run time (not a built-in, not a plug-in)."""
    return isinstance(spec, str) and spec.strip() in _REGISTRY and spec.strip() not in _BUILTIN


def _discover() -> dict[str, _Plugin]:
    """The group's entry points (not imported yet), discovered once; see :func:`refresh_plugins`."""
    global _plugins
    if _plugins is None:
        from importlib.metadata import entry_points

        found: dict[str, _Plugin] = {}
        try:
            eps = entry_points(group=ENTRY_POINT_GROUP)
        except Exception as exc:  # a broken distribution's metadata must not break the kit
            warnings.warn(f"merlin_kit: could not read the {ENTRY_POINT_GROUP!r} entry points: {exc}", RuntimeWarning,
                          stacklevel=3)
            eps = ()
        for ep in eps:
            dist = getattr(ep, "dist", None)
            label = f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"
            if ep.name in found:
                warnings.warn(
                    f"merlin_kit: strategy plug-in name {ep.name!r} is declared twice ({found[ep.name].value} and "
                    f"{ep.value}); using the first", RuntimeWarning, stacklevel=3)
                continue
            found[ep.name] = _Plugin(ep.name, ep.value, label, ep)
        _plugins = found
    return _plugins


def refresh_plugins() -> None:
    """Forget the discovered plug-ins, so that the next lookup sees packages installed since."""
    global _plugins
    _plugins = None
    importlib.invalidate_caches()


def _load_plugin(plugin: _Plugin) -> Any:
    """Import the plug-in's object once; a failure is remembered (and raised as StrategyError)."""
    if plugin.obj is None and plugin.error is None:
        try:
            obj = plugin.entry_point.load()
        except Exception as exc:
            plugin.error = f"{type(exc).__name__}: {exc}"
        else:
            if isinstance(obj, Strategy) or _is_strategy_class(obj):
                plugin.obj = obj
            else:
                plugin.error = f"it points to a {type(obj).__name__}, not a merlin_kit Strategy subclass or instance"
    if plugin.error is not None:
        raise StrategyError(
            f"strategy {plugin.describe()} cannot be loaded: {plugin.error}. Fix or reinstall that package "
            f"(pip install --force-reinstall {plugin.dist.split(' ')[0]}), or uninstall it."
        )
    return plugin.obj


def _instance(obj: Any, what: str) -> Strategy:
    if isinstance(obj, Strategy):
        return obj
    try:
        return obj()
    except Exception as exc:
        raise StrategyError(f"cannot create strategy {what}: {type(obj).__name__}() raised {type(exc).__name__}: {exc}") from exc


def list_strategies() -> list[str]:
    """Names usable as ``strategy=``: built-in ids, registered ids and installed plug-ins.

    Plug-ins are imported here; one that fails is left out with a warning naming it.
    """
    names = set(_BUILTIN) | set(_REGISTRY)
    for name, plugin in _discover().items():
        if name in names:
            continue  # a built-in or registered id wins (resolution order)
        try:
            _load_plugin(plugin)
        except StrategyError as exc:
            if not plugin.warned:
                warnings.warn(f"merlin_kit: {exc}", RuntimeWarning, stacklevel=2)
                plugin.warned = True
            continue
        names.add(name)
    return sorted(names)


def get_strategy(spec: Any) -> Strategy:
    """Resolve ``spec`` (id, plug-in name, ``"pkg.module:Name"``, Strategy class or instance) to an instance."""
    if isinstance(spec, Strategy):
        return spec
    if _is_strategy_class(spec):
        return _instance(spec, spec.__name__)
    if not isinstance(spec, str) or not spec.strip():
        raise StrategyError(
            f"a strategy is an id, a plug-in name, 'package.module:Name', a Strategy class or instance; got {spec!r}"
        )
    spec = spec.strip()
    if spec in _BUILTIN:
        return _BUILTIN[spec]()
    if spec in _REGISTRY:
        return _instance(_REGISTRY[spec], repr(spec))
    plugins = _discover()
    if spec not in plugins and ":" not in spec:
        refresh_plugins()  # installed since the first lookup?
        plugins = _discover()
    if spec in plugins:
        return _instance(_load_plugin(plugins[spec]), plugins[spec].describe())
    if ":" in spec:
        return _import_strategy(spec)
    known = ", ".join(sorted(set(_BUILTIN) | set(_REGISTRY) | set(plugins)))
    raise StrategyError(
        f"unknown strategy {spec!r}; known: {known}; or give a user strategy as 'package.module:ClassName', "
        "a Strategy class or instance"
    )


def _import_strategy(spec: str) -> Strategy:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise StrategyError(f"strategy {spec!r}: an import path is 'package.module:ClassName'")
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
    if isinstance(obj, Strategy) or _is_strategy_class(obj):
        return _instance(obj, repr(spec))
    raise StrategyError(f"{spec!r} is {type(obj).__name__}, not a merlin_kit Strategy subclass or instance")


for _cls in (S01TrailingMA, S04StochRSI):
    _BUILTIN[_cls.id] = _cls
del _cls

__all__ = [
    "ENTRY_POINT_GROUP", "IndicatorCache", "Param", "Strategy", "StrategyOutput", "S01TrailingMA", "S04StochRSI",
    "empty_output", "get_strategy", "is_registered_id", "list_strategies", "output_from_kernel", "refresh_plugins",
    "register_strategy", "unregister_strategy",
]
