"""optuna-dashboard on a run's study storage, in a background process.

:func:`dashboard` starts ``optuna-dashboard`` (a subprocess of this Python, so
stopping it is a plain terminate) on the same storage the workers write to,
bound to 127.0.0.1 unless told otherwise, waits until it answers HTTP and
returns a :class:`DashboardHandle` with the URL (shown as a link in a notebook)
and ``stop()``.  The dashboard re-reads the storage itself, so trials appear
while workers add them.  This module needs neither ipywidgets nor plotly: the
``merlin-kit dashboard`` command uses it too.

Lifetime: the dashboard process never outlives the Python that started it.
``stop()``, the handle being collected and interpreter exit stop it; and when
this Python is killed (SIGKILL, a notebook kernel shut down or restarted) the
launcher ``_dashboard_child.py`` ends it too: a Linux parent-death signal and,
on every platform, a watchdog that polls the owner every second.  It runs in its
own session, so a Ctrl-C in the terminal reaches only this Python (which stops it).

Exposure: optuna-dashboard has no authentication and its API deletes studies,
so binding anything but a loopback address (127.0.0.0/8, ::1, ``localhost``)
needs ``allow_remote=True`` and warns.
"""

from __future__ import annotations

import atexit
import html
import ipaddress
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import warnings
import weakref
from pathlib import Path
from typing import Any

from .._platform import new_process_group, wait_popen
from ..errors import ConfigError
from ..optimize import JOURNAL_NAME, StorageLocation, redact

DEFAULT_HOST = "127.0.0.1"
STARTUP_TIMEOUT = 60.0
CHILD_SCRIPT = str(Path(__file__).with_name("_dashboard_child.py"))
REMOTE_WARNING = ("optuna-dashboard has no authentication: anyone who can reach this port can read "
                  "and DELETE studies")


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1); False for ``""``, 0.0.0.0, names, LAN addresses."""
    host = (host or "").strip().strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(addr, "ipv4_mapped", None)
    return bool(addr.is_loopback or (mapped is not None and mapped.is_loopback))


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _local_addresses() -> list[str]:
    """This machine's non-loopback IPv4/IPv6 addresses, best effort (no third-party packages)."""
    found: set[str] = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.add(str(info[4][0]))
    except OSError:
        pass
    for family, probe in ((socket.AF_INET, "192.0.2.1"), (socket.AF_INET6, "2001:db8::1")):
        try:  # the address a route out would use; connect() on UDP sends nothing
            with socket.socket(family, socket.SOCK_DGRAM) as s:
                s.connect((probe, 9))
                found.add(str(s.getsockname()[0]))
        except OSError:
            pass
    if sys.platform.startswith("linux"):
        try:  # every interface's IPv4 address
            import fcntl
            import struct

            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for _, name in socket.if_nameindex():
                    try:
                        req = struct.pack("256s", name.encode()[:15])
                        found.add(socket.inet_ntoa(fcntl.ioctl(s.fileno(), 0x8915, req)[20:24]))  # SIOCGIFADDR
                    except OSError:
                        pass
        except (OSError, ImportError, AttributeError):
            pass
    out = []
    for a in found:
        try:
            ip = ipaddress.ip_address(a.split("%", 1)[0])
        except ValueError:
            continue
        if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified):
            out.append(str(ip))
    return sorted(out, key=lambda a: (":" in a, a))


def reachable_urls(host: str, port: int) -> list[str]:
    """The URLs under which other machines can reach a dashboard bound to ``host`` (for wildcard hosts, each address)."""
    host = (host or "").strip().strip("[]")
    if host in ("", "0.0.0.0", "::"):
        names: list[str] = []
        hostname = socket.gethostname()
        if hostname and hostname.lower() != "localhost":
            names.append(hostname)
        addrs = _local_addresses()
        if host == "0.0.0.0":
            addrs = [a for a in addrs if ":" not in a]
        names += addrs
    else:
        names = [host]
    return [f"http://{_url_host(n)}:{port}/dashboard/" for n in names]


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
        #: the storage with any password masked: what is shown or printed
        self.storage_display = redact(storage)
        self.host = host
        self.port = port
        self.log_path = log_path
        self.url = f"http://{_browse_host(host)}:{port}/dashboard/"
        #: where other machines reach it: empty on a loopback host, else each reachable URL
        self.remote_urls: list[str] = [] if is_loopback_host(host) else reachable_urls(host, port)
        self._finalizer = weakref.finalize(self, _terminate, process, log_path)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the dashboard process (idempotent)."""
        _terminate(self.process, None, timeout)
        self._finalizer()

    def wait(self) -> int:
        return wait_popen(self.process)  # in slices: Ctrl-C interrupts it on Windows too

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
        remote = ""
        if self.remote_urls:
            remote = ("<br><b style='color:#b00'>" + html.escape(REMOTE_WARNING) + "</b>; reachable at "
                      + ", ".join(html.escape(u) for u in self.remote_urls))
        return (f'<a href="{url}" target="_blank" rel="noopener">optuna-dashboard: {url}</a>{state}{remote}'
                f"<br><span style='font-size:90%;color:#555'>study storage: {html.escape(self.storage_display)}</span>")

    def __repr__(self) -> str:
        return f"<DashboardHandle {self.url} {'running' if self.running else 'stopped'} storage={self.storage_display!r}>"


def _browse_host(host: str) -> str:
    """The address this machine uses to talk to a dashboard bound to ``host``."""
    host = (host or "").strip().strip("[]")
    if host in ("", "0.0.0.0"):
        return DEFAULT_HOST
    if host == "::":
        return "[::1]"
    return _url_host(host)


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


def check_host(host: str, allow_remote: bool = False) -> None:
    """Raise ConfigError(field="host") for a non-loopback ``host`` unless ``allow_remote``."""
    if not allow_remote and not is_loopback_host(host):
        shown = host if host else '""'
        raise ConfigError(
            f"dashboard: host {shown} is not a loopback address, so other machines could reach it, and "
            "optuna-dashboard has no authentication (anyone who reaches it can read and DELETE studies); "
            "pass allow_remote=True to do it anyway",
            field="host", reason="not a loopback address: needs allow_remote=True")


def dashboard(run_or_location: Any, port: int | None = None, host: str = DEFAULT_HOST, *,
              allow_remote: bool = False, timeout: float = STARTUP_TIMEOUT) -> DashboardHandle:
    """Start optuna-dashboard on a run's storage (or a run folder, journal path or storage URL).

    ``port=None`` picks a free port.  Returns once the dashboard answers HTTP;
    raises RuntimeError (with its log) if it does not start within ``timeout`` s.

    ``host`` must be a loopback address (127.0.0.0/8, ::1, ``localhost``) unless
    ``allow_remote=True`` (else ConfigError with ``field="host"``): optuna-dashboard
    has no authentication and its API deletes studies.  With a remote host, a
    RuntimeWarning names the risk and ``handle.remote_urls`` the reachable URLs.

    The dashboard process ends with this Python, however it ends (see the module doc).
    """
    check_host(host, allow_remote)
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
    cmd = [sys.executable, CHILD_SCRIPT, "--owner-pid", str(os.getpid())]
    # Linux's parent-death signal fires when the *thread* that started the child ends: ask for it only
    # from the main thread (its end is this process's end); the child's watchdog covers the other cases
    if threading.current_thread() is threading.main_thread():
        cmd.append("--pdeathsig")
    cmd += ["--", storage, "--host", host, "--port", str(port), "--server", "wsgiref"]
    # own session / process group: a Ctrl-C in the terminal reaches only this process, which stops the child
    group = new_process_group()  # out of the console's Ctrl-C: Windows process group / POSIX session
    with os.fdopen(fd, "wb") as log:
        process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, **group)
    handle = DashboardHandle(process, storage, host, port, log_path)
    try:
        _wait_until_up(handle, timeout)
    except BaseException:  # startup failed or was interrupted (Ctrl-C, SIGTERM in the CLI): leave nothing behind
        handle.stop()
        raise
    if not is_loopback_host(host):
        warnings.warn(f"optuna-dashboard on {host or 'all interfaces'}:{port}, reachable at "
                      f"{', '.join(handle.remote_urls) or 'this machine only'}: {REMOTE_WARNING}",
                      RuntimeWarning, stacklevel=2)
    _HANDLES.add(handle)
    return handle


def _wait_until_up(handle: DashboardHandle, timeout: float) -> None:
    process, port = handle.process, handle.port
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy for loopback
    probe = f"http://{_browse_host(handle.host)}:{port}/api/studies"
    while True:
        if process.poll() is not None:
            text = handle.log()
            raise RuntimeError(f"optuna-dashboard exited with code {process.returncode}:\n{text[-3000:]}")
        try:
            with opener.open(probe, timeout=2) as resp:
                if resp.status == 200:
                    break
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        if time.monotonic() > deadline:
            text = handle.log()
            raise RuntimeError(f"optuna-dashboard did not answer on {probe} within {timeout:.0f} s:\n{text[-3000:]}")
        time.sleep(0.2)


__all__ = ["DashboardHandle", "check_host", "dashboard", "free_port", "is_loopback_host", "reachable_urls",
           "resolve_storage"]
