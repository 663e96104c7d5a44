"""Exceptions of merlin_kit.

Every error a person can cause (bad file, bad parameter, bad configuration) is a
subclass of ``ValueError`` so that generic callers can catch it, and of
:class:`MerlinError` so that the kit's own callers (CLI, notebook panel) can turn
it into a message without a traceback.
"""

from __future__ import annotations


class MerlinError(Exception):
    """Base class of every error raised on purpose by merlin_kit."""


class DataError(MerlinError, ValueError):
    """OHLCV input that cannot be used: names the file, column and row."""


class ParameterError(MerlinError, ValueError):
    """A strategy or indicator parameter that is unknown, of the wrong type or out of limits."""


class StrategyError(MerlinError, ValueError):
    """A strategy that cannot be resolved, loaded or run."""


class ConfigError(MerlinError, ValueError):
    """An optimisation configuration that is invalid: names the field and the allowed values."""


class OptimizationError(MerlinError, RuntimeError):
    """An optimisation that could not produce results (e.g. every worker failed)."""
