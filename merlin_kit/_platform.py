"""What differs between Linux, macOS and Windows, in one place.

Every platform decision of the kit goes through :func:`is_windows` /
:func:`is_macos`, never through ``sys.platform`` or ``os.name`` directly, so
that the test suite can run the Windows (or macOS) code paths on Linux: with
``MERLIN_KIT_SIMULATE=windows`` (or ``macos``) these functions answer as that
platform would, while the standard library keeps behaving as on Linux.  The
Windows API calls of :func:`pid_alive` then come from the test suite's
simulation module (``tests/_simulate/merlin_kit_simulate.py``), which emulates
them from ``/proc``.

* :func:`pid_alive`: ``os.kill(pid, 0)`` is a liveness probe only on POSIX; on
  Windows signal 0 is ``CTRL_C_EVENT`` (it raises for a dead pid and can
  interrupt a live one), so Windows asks ``OpenProcess`` +
  ``WaitForSingleObject``;
* :func:`host_id`: the machine's identity for pid liveness (macOS: the
  hardware UUID, because the host name changes with the network);
* :func:`wait_event` / :func:`join_process`: waits that Ctrl-C can interrupt on
  every OS (CPython gh-80116: untimed waits ignore Ctrl-C on Windows);
* :func:`new_process_group`: ``Popen`` keyword arguments that detach a child
  from the console's Ctrl-C;
* :func:`console_safe`: stdout that survives legacy code pages (cp437, cp932);
* :func:`default_workers`: the CPU count, capped.
"""

from __future__ import annotations

import functools
import os
import re
import socket
import subprocess
import sys
import threading
import time
from typing import Any

SIMULATE_ENV = "MERLIN_KIT_SIMULATE"
#: seconds between the checks of an interruptible wait
WAIT_SLICE = 0.25
#: most worker processes by default (the CPU count above it); more can be asked for explicitly up to MAX_WORKERS
DEFAULT_WORKERS_CAP = 32


def simulated() -> str:
    """``windows``, ``macos`` or ``""``: the platform the test suite simulates (``MERLIN_KIT_SIMULATE``)."""
    return os.environ.get(SIMULATE_ENV, "").strip().lower()


def is_windows() -> bool:
    return os.name == "nt" or simulated() == "windows"


def is_macos() -> bool:
    return sys.platform == "darwin" or simulated() == "macos"


# -- process liveness -------------------------------------------------------
PROCESS_QUERY_LIMITED_INFORMATION = 0x1000
SYNCHRONIZE = 0x00100000
WAIT_TIMEOUT = 0x102
ERROR_ACCESS_DENIED = 5


class _Kernel32:
    """The three kernel32 calls :func:`pid_alive` needs (real Windows)."""

    def __init__(self) -> None:
        import ctypes
        from ctypes import wintypes

        self._ctypes = ctypes
        k = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        k.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
        k.OpenProcess.restype = wintypes.HANDLE
        k.WaitForSingleObject.argtypes = (wintypes.HANDLE, wintypes.DWORD)
        k.WaitForSingleObject.restype = wintypes.DWORD
        k.CloseHandle.argtypes = (wintypes.HANDLE,)
        self.k = k

    def open_process(self, pid: int) -> Any:
        return self.k.OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION | SYNCHRONIZE, False, pid)

    def last_error(self) -> int:
        return self._ctypes.get_last_error()  # type: ignore[attr-defined]

    def wait(self, handle: Any, ms: int) -> int:
        return self.k.WaitForSingleObject(handle, ms)

    def close(self, handle: Any) -> None:
        self.k.CloseHandle(handle)


@functools.lru_cache(maxsize=None)
def _kernel32() -> Any:
    if os.name == "nt":
        return _Kernel32()
    import merlin_kit_simulate  # type: ignore[import-not-found]  # the test suite's emulation (module docstring)

    return merlin_kit_simulate.Kernel32()


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (never sends it anything)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    if is_windows():
        api = _kernel32()
        handle = api.open_process(pid)
        if not handle:
            # access denied: it exists but belongs to someone else; anything else (87: no such pid): gone
            return api.last_error() == ERROR_ACCESS_DENIED
        try:
            return api.wait(handle, 0) == WAIT_TIMEOUT  # signalled = exited (a pid kept only by open handles)
        finally:
            api.close(handle)
    try:
        os.kill(pid, 0)  # portability: POSIX only (signal 0 = existence check)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


# -- host identity ----------------------------------------------------------
def _macos_uuid() -> str | None:
    try:
        out = subprocess.run(["ioreg", "-rd1", "-c", "IOPlatformExpertDevice"], capture_output=True, text=True,
                             timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r'"IOPlatformUUID"\s*=\s*"([^"]+)"', out)
    return found.group(1) if found else None


def _windows_guid() -> str | None:
    try:
        import winreg  # type: ignore[import-not-found]

        with winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"SOFTWARE\Microsoft\Cryptography",  # type: ignore
                            0, winreg.KEY_READ | winreg.KEY_WOW64_64KEY) as key:  # type: ignore[attr-defined]
            return str(winreg.QueryValueEx(key, "MachineGuid")[0])  # type: ignore[attr-defined]
    except (ImportError, OSError):
        return None


@functools.lru_cache(maxsize=None)
def _machine_id() -> str:
    if sys.platform == "darwin":
        uuid = _macos_uuid()
        if uuid:
            return f"mac-{uuid}"
    elif os.name == "nt":
        guid = _windows_guid()
        if guid:
            return f"win-{guid}"
    # Linux: the host name is stable, and unlike /etc/machine-id it differs between containers of one
    # image (which have separate pid spaces); elsewhere the fallback
    return socket.gethostname()


def host_id() -> str:
    """This machine in trial ownership and lease records (pids are only checked where ``host_id`` matches).

    macOS: the hardware UUID (the host name changes with the network); Windows:
    the installation's MachineGuid; Linux: the host name.  ``MERLIN_HOST_ID``
    overrides it (containers that share a host name).
    """
    return os.environ.get("MERLIN_HOST_ID") or _machine_id()


# -- waits Ctrl-C can interrupt --------------------------------------------
def wait_event(event: threading.Event, timeout: float | None = None) -> bool:
    """``event.wait(timeout)`` in short slices, so that Ctrl-C interrupts it on Windows too."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = WAIT_SLICE if deadline is None else min(WAIT_SLICE, deadline - time.monotonic())
        if event.wait(max(0.0, left)):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False


def join_process(process: Any, timeout: float | None = None) -> None:
    """``process.join(timeout)`` (multiprocessing) in short slices, interruptible by Ctrl-C on Windows."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while process.exitcode is None:
        left = WAIT_SLICE if deadline is None else min(WAIT_SLICE, deadline - time.monotonic())
        if left <= 0:
            return
        process.join(left)


def wait_popen(process: subprocess.Popen) -> int:
    """``Popen.wait()`` in short slices, interruptible by Ctrl-C on Windows."""
    while True:
        try:
            return process.wait(WAIT_SLICE)
        except subprocess.TimeoutExpired:
            continue


# -- files ----------------------------------------------------------------
#: how long a replace retries while Windows reports the target in use (a virus scanner, an indexer, a reader)
REPLACE_RETRY_SECONDS = 2.0


def replace_file(src: "str | os.PathLike[str]", dst: "str | os.PathLike[str]") -> None:
    """``os.replace`` that rides out Windows' sharing violations.

    On Windows a file that another process has open (a virus scanner for a moment, a
    spreadsheet for as long as it is open) cannot be replaced: retry for
    :data:`REPLACE_RETRY_SECONDS`, then raise a PermissionError that says what to do.
    """
    deadline = time.monotonic() + (REPLACE_RETRY_SECONDS if is_windows() else 0.0)
    while True:
        try:
            os.replace(src, dst)
            return
        except PermissionError as exc:
            if time.monotonic() >= deadline:
                if is_windows():
                    raise PermissionError(exc.errno, f"{exc.strerror}: {os.fspath(dst)!r} is open in another "
                                                     "program (close it and run again)", os.fspath(dst)) from exc
                raise
            time.sleep(0.1)


def write_text_atomic(path: "str | os.PathLike[str]", text: str) -> None:
    """Write ``text`` to a temp file beside ``path``, then rename it over ``path``: readers never see half a file
    (results.csv, summary.json, walk-forward tables), and a failed write leaves no temp file behind."""
    target = os.fspath(path)
    tmp = os.path.join(os.path.dirname(target) or ".", f".{os.path.basename(target)}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        replace_file(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# -- child processes --------------------------------------------------------
def new_process_group() -> dict[str, Any]:
    """``Popen`` keywords that keep a child out of the console's Ctrl-C (its own group/session)."""
    if os.name == "nt":
        return {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined]
    return {"start_new_session": True}  # portability: POSIX branch


def console_safe() -> None:
    """Let stdout/stderr print any character on a console or pipe whose encoding cannot (cp437, cp932).

    A character the encoding lacks ("—", accented names in a path) becomes ``?`` /
    ``\\u2014`` instead of a UnicodeEncodeError in the middle of a run's report.
    """
    for name, errors in (("stdout", "replace"), ("stderr", "backslashreplace")):
        stream = getattr(sys, name)
        encoding = getattr(stream, "encoding", None) or ""
        if not encoding or getattr(stream, "errors", "strict") != "strict":
            continue
        try:
            "—é".encode(encoding)
        except (UnicodeEncodeError, LookupError):
            try:
                stream.reconfigure(errors=errors)
            except (AttributeError, ValueError):  # not a TextIOWrapper (captured by a test harness)
                pass


#: macOS's limit of a Unix socket path (sun_path), in bytes with the terminating NUL
MACOS_SOCKET_PATH_MAX = 104


def forkserver_path_fits(tempdir: str | None = None) -> bool:
    """Whether the forkserver's socket (``$TMPDIR/pymp-XXXXXXXX/listener-XXXXXXXX``) fits macOS's path limit."""
    import tempfile

    base = tempdir if tempdir is not None else tempfile.gettempdir()
    return len(os.fsencode(base)) + len("/pymp-12345678/listener-12345678") < MACOS_SOCKET_PATH_MAX


def default_workers() -> int:
    """The default number of worker processes: the CPU count, at most :data:`DEFAULT_WORKERS_CAP`."""
    return max(1, min(os.cpu_count() or 1, DEFAULT_WORKERS_CAP))
