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
    """OHLCV input that cannot be used: names the file, column and row.

    ``column`` (the column's name as found in the input) and ``row`` (the
    1-based data row, as in the message) are set when the problem is in one
    column or row, so a caller can point at it without parsing the message.
    """

    def __init__(self, message: str, *, column: str | None = None, row: int | None = None) -> None:
        super().__init__(message)  # args == (message,): str() and pickling stay as before
        self.column = column
        self.row = row


class ParameterError(MerlinError, ValueError):
    """A strategy or indicator parameter that is unknown, of the wrong type or out of limits."""


class StrategyError(MerlinError, ValueError):
    """A strategy that cannot be resolved, loaded or run."""


class ConfigError(MerlinError, ValueError):
    """An optimisation configuration that is invalid: names the field and the allowed values.

    ``field`` is the config attribute the error is about (an attribute of
    ``OptimizationConfig`` or ``OptunaConfig``, e.g. ``"param_ranges"``), ``param``
    the strategy parameter when one is concerned, and ``reason`` the message
    without its field/parameter prefix, for showing beside that field.  They let
    a caller (the notebook panel) mark the field without parsing the message.
    """

    def __init__(self, message: str, *, field: str | None = None, param: str | None = None,
                 reason: str | None = None) -> None:
        super().__init__(message)  # args == (message,): str() and pickling stay as before
        self.field = field
        self.param = param
        self.reason = message if reason is None else reason


class OptimizationError(MerlinError, RuntimeError):
    """An optimisation that could not produce results (e.g. every worker failed)."""
