"""Strategies used by the engine tests; importable by spawned workers as ``tests._strategies:Name``."""

from __future__ import annotations

import atexit
import os
import tempfile
import time
from typing import Any, Mapping

from merlin_kit.strategies import IndicatorCache, S01TrailingMA


class RaisingS01(S01TrailingMA):
    """S01 that raises for one value of closeCountLong: those trials must FAIL, the run must go on."""

    id = "test_raising_s01"

    def run(self, data, params: Mapping[str, Any], cache: IndicatorCache | None = None):
        if params["closeCountLong"] == 3:
            raise RuntimeError("boom: closeCountLong=3 is cursed")
        return super().run(data, params, cache)


class SlowS01(S01TrailingMA):
    """S01 that takes ~0.25 s a trial, so that a test can act while trials are running."""

    id = "test_slow_s01"

    def run(self, data, params: Mapping[str, Any], cache: IndicatorCache | None = None):
        time.sleep(0.25)
        return super().run(data, params, cache)


class SlowerS01(S01TrailingMA):
    """S01 that takes ~1 s a trial: a test can kill a worker while its trial surely runs."""

    id = "test_slower_s01"

    def run(self, data, params: Mapping[str, Any], cache: IndicatorCache | None = None):
        time.sleep(1.0)
        return super().run(data, params, cache)


class ChildCrashS01(S01TrailingMA):
    """Constructs in the parent but raises in any other process: every worker fails at start-up."""

    id = "test_child_crash_s01"

    def __init__(self) -> None:
        import os

        parent = os.environ.get("MERLIN_TEST_PARENT_PID")
        if parent is not None and int(parent) != os.getpid():
            raise RuntimeError("worker cannot construct this strategy (test)")


class TeardownProbeS01(S01TrailingMA):
    """S01 whose first run in a process registers an atexit hook that appends the pid to
    ``$MERLIN_TEST_TEARDOWN_FILE``: it shows whether a worker went through interpreter teardown."""

    id = "test_teardown_probe_s01"

    def run(self, data, params: Mapping[str, Any], cache: IndicatorCache | None = None):
        global _probe_registered
        if not _probe_registered:
            atexit.register(_append_pid)
            _probe_registered = True
        return super().run(data, params, cache)


_probe_registered = False


def _append_pid() -> None:
    path = os.environ.get("MERLIN_TEST_TEARDOWN_FILE")
    if path:
        with open(path, "a") as fh:
            fh.write(f"{os.getpid()}\n")


class RemoteFirstS01(SlowS01):
    """SlowS01 whose local workers wait until a worker on another host has run a trial.

    The process with ``MERLIN_HOST_ID == $MERLIN_TEST_REMOTE_HOST`` creates ``$MERLIN_TEST_GATE_FILE``
    when it runs a trial; worker processes of ``$MERLIN_TEST_PARENT_PID`` wait for that file (60 s at
    most, once per process) before their trials, so that the remote machine surely gets work.  The
    parent itself (its test backtest) never waits.
    """

    id = "test_remote_first_s01"

    def run(self, data, params: Mapping[str, Any], cache: IndicatorCache | None = None):
        global _gate_deadline
        gate = os.environ.get("MERLIN_TEST_GATE_FILE")
        if gate:
            if os.environ.get("MERLIN_HOST_ID") == os.environ.get("MERLIN_TEST_REMOTE_HOST"):
                open(gate, "a").close()
            elif str(os.getpid()) != os.environ.get("MERLIN_TEST_PARENT_PID"):
                if _gate_deadline is None:
                    _gate_deadline = time.monotonic() + 60
                while not os.path.exists(gate) and time.monotonic() < _gate_deadline:
                    time.sleep(0.02)
        return super().run(data, params, cache)


_gate_deadline: float | None = None


#: set by a test in its own process after import; a worker sees the value only if it is a fork of that process
PARENT_MARK: str | None = None
#: where each process running StartMethodProbeS01 leaves ``<pid>.txt`` (a fixed place: a forkserver's workers
#: inherit the server's environment, not the test's)
PROBE_DIR = os.path.join(tempfile.gettempdir(), f"merlin-start-method-probe-{os.getuid()}")


class StartMethodProbeS01(S01TrailingMA):
    """S01 that writes ``ppid PARENT_MARK`` to ``PROBE_DIR/<pid>.txt`` in each process it runs in:
    a plain fork inherits the test's mark; spawn and forkserver workers import the module afresh (``None``),
    and forkserver workers are children of the server, not of the test."""

    id = "test_start_method_probe_s01"

    def run(self, data, params: Mapping[str, Any], cache: IndicatorCache | None = None):
        path = os.path.join(PROBE_DIR, f"{os.getpid()}.txt")
        if not os.path.exists(path):
            os.makedirs(PROBE_DIR, exist_ok=True)
            with open(path, "w") as fh:
                fh.write(f"{os.getppid()} {PARENT_MARK}\n")
        return super().run(data, params, cache)
