"""Windows (and macOS) behaviour simulated on Linux, for the tests of ``tests/test_platforms.py``.

Put this folder first on ``PYTHONPATH`` and set ``MERLIN_KIT_SIMULATE=windows``:
every process started from there (spawned workers, ``merlin-kit`` subprocesses)
runs :func:`install` from ``sitecustomize`` before anything else, and

* ``os.kill(pid, 0)`` raises ``OSError(EINVAL)`` as Windows does (signal 0 is
  CTRL_C_EVENT there: WinError 87 for most pids) -- code that still probes
  liveness with it fails loudly;
* ``os.symlink`` raises WinError 1314 (a normal Windows user may not create
  symlinks), so a journal's symlink lock cannot work;
* ``merlin_kit._platform.is_windows()`` is True (through the environment
  variable), so the kit takes its Windows code paths; its Windows API calls for
  process liveness come from :class:`Kernel32`, emulated from ``/proc``.

``sys.platform`` and ``os.name`` stay Linux: the standard library must keep
working.  ``MERLIN_KIT_SIMULATE=macos`` only flips ``is_macos()``.
"""

from __future__ import annotations

import errno
import os

WAIT_OBJECT_0 = 0
WAIT_TIMEOUT = 0x102
ERROR_INVALID_PARAMETER = 87
_installed = False


def install(platform: str) -> None:
    global _installed
    if _installed or platform != "windows":
        return
    _installed = True
    real_kill = os.kill

    def kill(pid: int, sig: int) -> None:
        if sig == 0:  # Windows: CTRL_C_EVENT, which fails for a pid without this console (WinError 87)
            raise OSError(errno.EINVAL, "[WinError 87] The parameter is incorrect (simulated Windows)")
        real_kill(pid, sig)

    def symlink(src, dst, target_is_directory=False, *, dir_fd=None):  # noqa: ARG001
        err = OSError(errno.EPERM, "[WinError 1314] A required privilege is not held by the client "
                                   "(simulated Windows)", os.fspath(src), None, os.fspath(dst))
        err.winerror = 1314  # type: ignore[attr-defined]
        raise err

    os.kill = kill
    os.symlink = symlink


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


class Kernel32:
    """OpenProcess / WaitForSingleObject / CloseHandle / GetLastError, answered from /proc."""

    def __init__(self) -> None:
        self._error = 0

    def open_process(self, pid: int) -> int:
        if _state(pid) is None:
            self._error = ERROR_INVALID_PARAMETER
            return 0
        return pid

    def last_error(self) -> int:
        return self._error

    def wait(self, handle: int, ms: int) -> int:
        state = _state(handle)
        return WAIT_OBJECT_0 if state in (None, "Z", "X") else WAIT_TIMEOUT

    def close(self, handle: int) -> None:
        pass
