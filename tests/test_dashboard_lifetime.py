"""The optuna-dashboard process dies with its owner, and is not exposed to other machines by accident.

Real processes throughout: ``python -m merlin_kit dashboard`` (or a Python that calls
``merlin_kit.notebook.dashboard``) is started, answers HTTP, is then ended by a signal,
and the dashboard process for its port must be gone within a few seconds.  The
dashboard process is found through /proc (Linux), by the launcher's command line.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import pytest

if os.name != "posix":  # the parametrisations below name SIGHUP and SIGKILL, which Windows lacks
    pytest.skip("POSIX signals", allow_module_level=True)
pytestmark = pytest.mark.posix_only
pytest.importorskip("optuna_dashboard")
optuna = pytest.importorskip("optuna")

from merlin_kit.errors import ConfigError
from merlin_kit.notebook.dashboard import CHILD_SCRIPT, dashboard, free_port, is_loopback_host

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
    p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
GONE_WITHIN = 10.0  # s: the death signal acts at once, the watchdog within ~1 s

needs_proc = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds processes through /proc")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder with a study.journal holding one study of three finished trials."""
    from optuna.storages import JournalStorage

    try:
        from optuna.storages.journal import JournalFileBackend
    except ImportError:  # optuna < 4
        from optuna.storages import JournalFileStorage as JournalFileBackend
    folder = tmp_path_factory.mktemp("lifetime") / "run"
    folder.mkdir()
    storage = JournalStorage(JournalFileBackend(str(folder / "study.journal")))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="lifetime", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1) ** 2, n_trials=3)
    return folder


def answers_http(port: int) -> bool:
    try:
        with _OPENER.open(f"http://127.0.0.1:{port}/api/studies", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, OSError):
        return False


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def dashboard_pids(port: int) -> list[int]:
    """Pids of live dashboard launcher processes serving ``port`` (zombies do not count)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv]
        if state != "Z" and any(a.endswith("_dashboard_child.py") for a in args) and str(port) in args:
            i = args.index(str(port))
            if i > 0 and args[i - 1] == "--port":
                pids.append(int(entry.name))
    return pids


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def cmdline(pid: int) -> list[str]:
    return [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]


class Owner:
    """A process that owns a dashboard, its stdout and stderr read by threads (so nothing blocks)."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, cwd=REPO, env=ENV)
        self.pid = self.proc.pid
        self.out: list[str] = []
        self.err: list[str] = []
        self.readers = [threading.Thread(target=self._read, args=(stream, lines), daemon=True)
                        for stream, lines in ((self.proc.stdout, self.out), (self.proc.stderr, self.err))]
        for t in self.readers:
            t.start()

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line)

    def wait_up(self, port: int, timeout: float = 60.0) -> int:
        """Wait until the dashboard on ``port`` answers HTTP and the owner said so; return the dashboard's pid."""
        deadline = time.monotonic() + timeout
        while not (self.out and answers_http(port)):
            if self.proc.poll() is not None:
                self.finish()
                pytest.fail(f"owner exited with {self.proc.returncode} before the dashboard answered:\n"
                            f"{''.join(self.out)}\n{''.join(self.err)}")
            if time.monotonic() > deadline:
                pytest.fail(f"the dashboard did not answer on port {port} within {timeout:.0f} s")
            time.sleep(0.2)
        pids = dashboard_pids(port)
        assert len(pids) == 1, pids
        assert parent_of(pids[0]) == self.pid
        return pids[0]

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def finish(self, timeout: float = 20.0) -> tuple[int, str, str]:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            pytest.fail(f"owner did not exit within {timeout:.0f} s:\n{''.join(self.out)}\n{''.join(self.err)}")
        for t in self.readers:
            t.join(10)
        return self.proc.returncode, "".join(self.out), "".join(self.err)

    def __enter__(self) -> "Owner":
        return self

    def __exit__(self, *exc) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def wait_gone(port: int, timeout: float = GONE_WITHIN) -> float:
    """Seconds until nothing serves ``port`` and no dashboard process for it is left; fails after ``timeout``."""
    t0 = time.monotonic()
    while port_open(port) or dashboard_pids(port):
        if time.monotonic() - t0 > timeout:
            pids = dashboard_pids(port)
            for pid in pids:  # do not leave it behind for the next test
                os.kill(pid, signal.SIGKILL)
            pytest.fail(f"dashboard on port {port} still there after {timeout:.0f} s (pids {pids})")
        time.sleep(0.1)
    return time.monotonic() - t0


def start_cli(run_dir: Path, port: int, *extra: str) -> Owner:
    return Owner([sys.executable, "-m", "merlin_kit", "dashboard", str(run_dir), "--port", str(port), *extra])


@needs_proc
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 0)])
def test_cli_stops_the_dashboard_on_a_signal(run_dir, sig, code):
    port = free_port()
    with start_cli(run_dir, port) as owner:
        child = owner.wait_up(port)
        assert "--pdeathsig" in cmdline(child)  # started from the CLI's main thread
        owner.send_signal(sig)
        rc, out, err = owner.finish()
    assert rc == code, err
    assert out.startswith(f"optuna-dashboard: http://127.0.0.1:{port}/dashboard/")
    assert "Traceback" not in err
    wait_gone(port, timeout=3.0)  # the CLI stopped it before exiting


@needs_proc
def test_cli_killed_outright_takes_the_dashboard_with_it(run_dir):
    port = free_port()
    with start_cli(run_dir, port) as owner:
        owner.wait_up(port)
        owner.send_signal(signal.SIGKILL)  # no handler runs in the CLI
        assert owner.finish()[0] == -signal.SIGKILL
    wait_gone(port)


KERNEL = textwrap.dedent("""
    import sys, threading, time
    from merlin_kit.notebook import dashboard
    run_dir, port, how = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    handles = []
    if how == "thread":  # started from a thread that then ends (as a widget callback might)
        t = threading.Thread(target=lambda: handles.append(dashboard(run_dir, port=port)))
        t.start(); t.join()
    else:
        handles.append(dashboard(run_dir, port=port))
    print("up", handles[0].url, flush=True)
    time.sleep(600)
""")


@needs_proc
@pytest.mark.parametrize("how, sig", [("main", signal.SIGKILL), ("main", signal.SIGTERM), ("thread", signal.SIGKILL)])
def test_a_killed_kernel_takes_its_dashboard_with_it(run_dir, how, sig):
    """A notebook kernel (a Python that called ``dashboard()``) killed or shut down: its dashboard ends too."""
    port = free_port()
    with Owner([sys.executable, "-c", KERNEL, str(run_dir), str(port), how]) as owner:
        child = owner.wait_up(port)
        if how == "thread":
            # no parent-death signal from a thread (Linux would send it when that thread ended): the
            # dashboard outlives the thread, and only the watchdog ends it when the process goes
            assert "--pdeathsig" not in cmdline(child)
            time.sleep(1.5)
            assert answers_http(port) and dashboard_pids(port) == [child]
        owner.send_signal(sig)
        assert owner.finish()[0] == -sig
    wait_gone(port)


def test_loopback_hosts():
    for host in ("127.0.0.1", "127.0.1.1", "localhost", "LocalHost", "::1", "[::1]"):
        assert is_loopback_host(host), host
    for host in ("0.0.0.0", "", "::", "10.1.2.3", "192.168.0.5", "example.org", "128.0.0.1"):
        assert not is_loopback_host(host), host


def test_api_refuses_a_remote_host_unless_allowed(run_dir):
    for host in ("0.0.0.0", "", "192.0.2.7"):
        with pytest.raises(ConfigError, match="allow_remote=True") as info:
            dashboard(run_dir, host=host)
        assert info.value.field == "host" and "DELETE" in str(info.value)
    with pytest.warns(RuntimeWarning, match="DELETE studies"):
        handle = dashboard(run_dir, host="0.0.0.0", allow_remote=True)
    with handle:
        assert handle.running and answers_http(handle.port)
        assert handle.url == f"http://127.0.0.1:{handle.port}/dashboard/"
        assert handle.remote_urls and all(f":{handle.port}/dashboard/" in u for u in handle.remote_urls)
        assert not any("127.0.0.1" in u for u in handle.remote_urls)
        assert "DELETE" in handle._repr_html_()
    assert not handle.running
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loopback: no warning
        with dashboard(run_dir, host="localhost") as local:
            assert local.remote_urls == [] and answers_http(local.port)


@needs_proc
def test_cli_refuses_a_remote_host_without_allow_remote(run_dir):
    port = free_port()
    res = subprocess.run([sys.executable, "-m", "merlin_kit", "dashboard", str(run_dir), "--port", str(port),
                          "--host", "0.0.0.0"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         cwd=REPO, env=ENV, timeout=60)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "--allow-remote" in res.stderr and "Traceback" not in res.stderr
    assert not port_open(port) and dashboard_pids(port) == []


@needs_proc
def test_cli_serves_a_remote_host_with_allow_remote_and_warns(run_dir):
    port = free_port()
    with start_cli(run_dir, port, "--host", "0.0.0.0", "--allow-remote") as owner:
        owner.wait_up(port)
        deadline = time.monotonic() + 10  # the remote URLs and the warning follow the first line
        while "DELETE" not in "".join(owner.err) and time.monotonic() < deadline:
            time.sleep(0.1)
        owner.send_signal(signal.SIGTERM)
        rc, out, err = owner.finish()
    assert rc == 143
    lines = out.splitlines()
    assert lines[0].startswith(f"optuna-dashboard: http://127.0.0.1:{port}/dashboard/")
    remote = [ln for ln in lines if ln.startswith("optuna-dashboard (other machines): http://")]
    assert remote and all(ln.endswith(f":{port}/dashboard/") for ln in remote)
    assert "no authentication" in err and "DELETE studies" in err
    wait_gone(port, timeout=3.0)
