"""optuna-dashboard on a run's study storage, in a background process.

:func:`dashboard` starts ``optuna-dashboard`` (a subprocess of this Python, so
stopping it is a plain terminate) on the same storage the workers write to,
bound to 127.0.0.1 unless told otherwise, waits until it answers HTTP and
returns a :class:`DashboardHandle` with the URL (shown as a link in a notebook)
and ``stop()``.  The dashboard re-reads the storage itself, so trials appear
while workers add them.  This module needs neither ipywidgets nor plotly: the
``merlin-kit dashboard`` command uses it too.
"""

from __future__ import annotations

import atexit
import html
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..optimize import JOURNAL_NAME, StorageLocation

DEFAULT_HOST = "127.0.0.1"
STARTUP_TIMEOUT = 60.0


def resolve_storage(run_or_location: Any) -> str:
    """The storage URL or journal path optuna-dashboard should open for a run, a run folder, a path or a URL."""
    location = getattr(run_or_location, "storage_location", None) or getattr(run_or_location, "location",
                                                                                run_or_location)
    if location is None or location == "":
        raise ConfigError("dashboard: no storage given (a run, a run folder with study.journal, a journal path or a URL)")
    if not isinstance(location, (str, os.PathLike, StorageLocation)):
        raise ConfigError(f"dashboard: expected a run, a path or a storage URL, got {type(run_or_location).__name__}")
    parsed = StorageLocation.parse(location)
    if parsed.path is None:
        return parsed.dashboard_target
    location = parsed.path
    path = Path(location).expanduser()
    if path.is_dir():
        journal = path / JOURNAL_NAME
        if not journal.is_file():
            raise ConfigError(f"dashboard: folder {path} has no {JOURNAL_NAME} (run with save_study=True to keep the study)")
        return str(journal.resolve())
    if not path.is_file():
        if hasattr(run_or_location, "location"):
            raise ConfigError(
                f"dashboard: the study of run {getattr(run_or_location, 'study_name', '')!r} was in a temporary journal "
                "that is deleted when the run ends; open the dashboard while it runs, or run with save_study=True"
            )
        raise ConfigError(f"dashboard: no such journal file or run folder: {location}")
    return str(path.resolve())


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port that is free on ``host`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host if host not in ("", "0.0.0.0") else DEFAULT_HOST, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = DEFAULT_HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host if host not in ("", "0.0.0.0") else DEFAULT_HOST, port))
        except OSError:
            return False
        return True


class DashboardHandle:
    """A running optuna-dashboard: ``url``, ``stop()``, a link when shown in a notebook."""

    def __init__(self, process: subprocess.Popen, storage: str, host: str, port: int, log_path: str) -> None:
        self.process = process
        self.storage = storage
        self.host = host
        self.port = port
        self.log_path = log_path
        browse_host = DEFAULT_HOST if host in ("", "0.0.0.0") else host
        self.url = f"http://{browse_host}:{port}/dashboard/"
        self._finalizer = weakref.finalize(self, _terminate, process, log_path)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the dashboard process (idempotent)."""
        _terminate(self.process, None, timeout)
        self._finalizer()

    def wait(self) -> int:
        return self.process.wait()

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> "DashboardHandle":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _repr_html_(self) -> str:
        state = "" if self.running else " (stopped)"
        url = html.escape(self.url)
        return (f'<a href="{url}" target="_blank" rel="noopener">optuna-dashboard: {url}</a>{state}'
                f"<br><span style='font-size:90%;color:#555'>study storage: {html.escape(self.storage)}</span>")

    def __repr__(self) -> str:
        return f"<DashboardHandle {self.url} {'running' if self.running else 'stopped'} storage={self.storage!r}>"


def _terminate(process: subprocess.Popen, log_path: str | None, timeout: float = 5.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    if log_path:
        try:
            os.unlink(log_path)
        except OSError:
            pass


_HANDLES: "weakref.WeakSet[DashboardHandle]" = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:  # pragma: no cover - interpreter exit
    for handle in list(_HANDLES):
        try:
            handle.stop(timeout=2)
        except Exception:
            pass


def dashboard(run_or_location: Any, port: int | None = None, host: str = DEFAULT_HOST, *,
              timeout: float = STARTUP_TIMEOUT) -> DashboardHandle:
    """Start optuna-dashboard on a run's storage (or a run folder, journal path or storage URL).

    ``port=None`` picks a free port.  Returns once the dashboard answers HTTP;
    raises RuntimeError (with its log) if it does not start within ``timeout`` s.
    """
    storage = resolve_storage(run_or_location)
    try:
        import optuna_dashboard  # noqa: F401
    except ImportError:
        raise ConfigError("dashboard: optuna-dashboard is not installed: pip install 'merlin-kit[notebook]'") from None
    if port is None:
        port = free_port(host)
    elif not port_is_free(port, host):
        raise ConfigError(f"dashboard: port {port} on {host} is in use; choose another or leave port=None")
    fd, log_path = tempfile.mkstemp(prefix="merlin-dashboard-", suffix=".log")
    cmd = [sys.executable, "-m", "optuna_dashboard._cli", storage, "--host", host, "--port", str(port),
           "--server", "wsgiref"]
    with os.fdopen(fd, "wb") as log:
        process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    handle = DashboardHandle(process, storage, host, port, log_path)
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy for loopback
    probe = f"http://{DEFAULT_HOST if host in ('', '0.0.0.0') else host}:{port}/api/studies"
    while True:
        if process.poll() is not None:
            text = handle.log()
            handle.stop()
            raise RuntimeError(f"optuna-dashboard exited with code {process.returncode}:\n{text[-3000:]}")
        try:
            with opener.open(probe, timeout=2) as resp:
                if resp.status == 200:
                    break
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if time.monotonic() > deadline:
            text = handle.log()
            handle.stop()
            raise RuntimeError(f"optuna-dashboard did not answer on {probe} within {timeout:.0f} s:\n{text[-3000:]}")
        time.sleep(0.2)
    _HANDLES.add(handle)
    return handle


__all__ = ["DashboardHandle", "dashboard", "free_port", "resolve_storage"]
