"""Optuna's log lines without colour codes where they cannot be shown as colour.

Jupyter kernels set ``FORCE_COLOR=1``, which makes Optuna's colorlog formatter write
ANSI escape codes although the kernel's stderr is not a terminal: saved notebooks and
papermill outputs then carry ``\\x1b[32m`` noise. The run (and its workers, which
inherit the variable) switch Optuna's handler to the same layout without colour when
stderr is not a terminal; a real terminal keeps its colours.
"""

from __future__ import annotations

import logging
import sys

import optuna

#: Optuna's default layout, without the colour fields
PLAIN_FORMAT = "[%(levelname)1.1s %(asctime)s] %(message)s"


def plain_optuna_logs() -> None:
    """Drop the colour of Optuna's default handler unless stderr is a terminal (idempotent)."""
    stream = sys.stderr
    if stream is not None and stream.isatty():
        return
    optuna.logging.get_verbosity()  # public call that installs Optuna's default handler if it is not there yet
    for handler in logging.getLogger("optuna").handlers:
        if type(handler.formatter).__module__.split(".")[0] == "colorlog":
            handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
