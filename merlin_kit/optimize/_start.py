"""How worker processes start: the ``auto`` start method and the warm forkserver.

``spawn`` makes every worker pay the imports and numba's kernel loading (~1.3 s)
before its first trial, which caps a short run's parallel efficiency near 0.6
with two workers.  A ``forkserver`` pays that once, in a server that lives as
long as the notebook kernel or script, and forks warm workers in milliseconds.
So the default, ``auto``, is ``forkserver`` wherever the platform has it
(Linux, macOS) and ``spawn`` on Windows, which has no fork.  On macOS the
server's socket path must fit 104 bytes: with a temp folder too long for it,
``auto`` takes ``spawn`` (an explicit ``forkserver`` is refused by
:func:`~.config.validate` with the remedy).

:func:`start_server_early` starts the server as soon as a run is validated,
before the parent parses the data file: the server's imports and kernel
warm-up (:mod:`._preload`) then overlap the parent's data load and test
backtest instead of following them.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import multiprocessing.process
import os
from collections.abc import Mapping

from .._platform import forkserver_path_fits, is_macos, is_windows

log = logging.getLogger(__name__)

AUTO = "auto"
#: what a forkserver imports once for all its workers (the entry point's module and the kernels)
FORKSERVER_PRELOAD = ["__main__", "merlin_kit.optimize._preload"]


def resolve_start_method(method: str) -> str:
    """The start method a run uses: ``auto`` resolved for this platform, any other name as given."""
    if method != AUTO:
        return method
    if is_windows() or "forkserver" not in multiprocessing.get_all_start_methods():
        return "spawn"
    if is_macos() and not forkserver_path_fits():
        log.info("start_method auto: the temp folder is too long for a forkserver socket on macOS; using spawn")
        return "spawn"
    return "forkserver"


def worker_context(method: str) -> multiprocessing.context.BaseContext:
    """The multiprocessing context of ``method`` (resolved); a forkserver's preload is set before it first starts."""
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        # a no-op once the server runs: its first start decides what it preloads
        ctx.set_forkserver_preload(FORKSERVER_PRELOAD)
    return ctx


#: the kit's settings in the environment start with this (MERLIN_HOST_ID, MERLIN_HEARTBEAT_*, MERLIN_SIGNAL_GRACE...)
SETTINGS_PREFIX = "MERLIN_"


def kit_settings() -> dict[str, str]:
    """This process's ``MERLIN_*`` environment variables, handed to every worker it starts."""
    return {k: v for k, v in os.environ.items() if k.startswith(SETTINGS_PREFIX)}


def adopt_kit_settings(settings: Mapping[str, str] | None) -> None:
    """Make this worker process's ``MERLIN_*`` variables exactly those of the run that started it.

    A forkserver's workers inherit the server's environment, which is the
    environment of the session's first run: a ``MERLIN_HOST_ID`` or
    ``MERLIN_SIGNAL_GRACE`` set in the notebook afterwards would never reach them.
    None changes nothing (a worker in someone else's process: a Dask task, or one started by hand).
    """
    if settings is None:
        return
    for key in [k for k in os.environ if k.startswith(SETTINGS_PREFIX) and k not in settings]:
        del os.environ[key]
    os.environ.update(settings)


def start_worker_process(method: str, worker_id: int, location: str, study_name: str,
                         trust_key: str) -> multiprocessing.process.BaseProcess:
    """Start a daemon process on :func:`~._worker.run_worker` (``method`` resolved: never ``auto``).

    The worker gets this process's ``MERLIN_*`` settings as they are now (see :func:`adopt_kit_settings`).
    With a forkserver that is still importing (a session's first run), ``start`` waits for it: a caller
    with other work (the parent's own worker thread) starts that first.
    """
    from ._worker import run_worker  # lazily: ._worker imports .config, which imports this module

    proc = worker_context(method).Process(target=run_worker, args=(location, study_name, worker_id, os.getpid()),
                                          kwargs={"trust_key": trust_key, "settings": kit_settings()},
                                          name=f"merlin-worker-{worker_id}", daemon=True)
    proc.start()
    return proc


#: whether an earlier run of this process started the forkserver (its forks then start in milliseconds)
_server_started = False


def start_server_early(method: str) -> bool:
    """Start the forkserver now (if ``method`` is forkserver) without waiting for its preload.

    ``ensure_running`` launches the server and returns at once; the server
    imports and warms the kernels while the caller goes on preparing the data.
    A server already running (a notebook's earlier run) is reused as it is.

    Returns whether workers will start cold: ``spawn`` (imports and kernels in every worker) or a
    forkserver that this call started (its preload takes seconds); False for ``fork`` and a warm server.
    """
    global _server_started
    if method != "forkserver":
        return method == "spawn"
    worker_context(method)
    multiprocessing.forkserver.ensure_running()
    cold, _server_started = not _server_started, True
    return cold
