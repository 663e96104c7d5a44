"""Windows and macOS behaviour, proven on Linux through the platform simulation (tests/_simulate).

Tests marked ``simulated`` run their processes with ``MERLIN_KIT_SIMULATE=windows``
and ``tests/_simulate`` first on PYTHONPATH, so every process of the run (the
CLI, its spawned workers, a joining ``merlin-kit worker``) sees what Windows
does: ``os.kill(pid, 0)`` raises, ``os.symlink`` is refused (WinError 1314), the
kit's ``is_windows()`` is True and its process liveness goes through the
(emulated) Windows API.  The in-process tests flip ``is_windows()`` /
``is_macos()`` through the environment variable only (the test process's own
``os`` stays untouched).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from merlin_kit import _platform, cli
from merlin_kit.errors import ConfigError
from merlin_kit.optimize import OptimizationConfig, OptunaConfig, StorageLocation, redact, start_optimization
from merlin_kit.optimize._preflight import safe_name
from merlin_kit.optimize._storage import journal_location, kind_of
from merlin_kit.optimize.config import MAX_WORKERS, validate

REPO = Path(__file__).resolve().parents[1]
SIMULATE_DIR = REPO / "tests" / "_simulate"
PARAMS = ["closeCountLong", "closeCountShort", "stopLongX"]
SLOW = "tests._strategies:SlowS01"  # 0.25 s a trial
PROC_TIMEOUT = 150

pytestmark = pytest.mark.timeout(400)


def simulated_env(platform: str = "windows", **extra: str) -> dict[str, str]:
    """The environment of a process that believes it runs on ``platform`` (and passes it to its children)."""
    env = {**os.environ, "MERLIN_KIT_SIMULATE": platform, **extra,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(SIMULATE_DIR), str(REPO), os.environ.get("PYTHONPATH")]))}
    env.pop("MERLIN_HOST_ID", None)
    return env


def merlin(args: list[str], env: dict[str, str], **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "merlin_kit", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


@pytest.fixture
def windows(monkeypatch):
    """This process's kit sees Windows (its pid_alive uses the emulated Windows API)."""
    monkeypatch.setenv("MERLIN_KIT_SIMULATE", "windows")
    monkeypatch.syspath_prepend(str(SIMULATE_DIR))
    _platform._kernel32.cache_clear()
    yield
    _platform._kernel32.cache_clear()


@pytest.fixture(scope="module")
def data_csv(write_sample_csv) -> Path:
    return write_sample_csv("bars.csv", 3000)


# -- the simulation itself ---------------------------------------------------------------------------------
def test_the_simulation_behaves_like_windows(tmp_path):
    code = ("import os, errno\n"
            "try:\n    os.kill(os.getpid(), 0)\nexcept OSError as e:\n    print('kill', e.errno)\n"
            "try:\n    os.symlink('a', 'b')\nexcept OSError as e:\n    print('symlink', e.winerror)\n"
            "from merlin_kit._platform import is_windows; print('windows', is_windows())\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=simulated_env(), capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.split("\n")[:3] == ["kill 22", "symlink 1314", "windows True"], out.stderr


# -- process liveness ---------------------------------------------------------------------------------------
def test_pid_alive_on_windows_never_sends_a_signal(windows, monkeypatch):
    def no_kill(pid, sig):
        raise AssertionError(f"os.kill({pid}, {sig}) on Windows")

    monkeypatch.setattr(os, "kill", no_kill)
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    while not Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
        time.sleep(0.02)  # exited, not reaped yet: Windows' "signalled process object"
    try:
        assert _platform.pid_alive(os.getpid())
        assert not _platform.pid_alive(zombie.pid)
    finally:
        zombie.wait()
    assert not _platform.pid_alive(zombie.pid)
    assert not _platform.pid_alive(0) and not _platform.pid_alive(-5)


def test_pid_alive_on_posix():
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert _platform.pid_alive(os.getpid()) and not _platform.pid_alive(dead.pid)


def test_host_id_is_stable_and_overridable(monkeypatch):
    monkeypatch.delenv("MERLIN_HOST_ID", raising=False)
    assert _platform.host_id() == _platform.host_id() != ""
    monkeypatch.setenv("MERLIN_HOST_ID", "box-7")
    assert _platform.host_id() == "box-7"


# -- journal locations --------------------------------------------------------------------------------------
@pytest.mark.parametrize("location, path", [
    ("journal+open:///C:/runs/[2025] é/study.journal", "C:/runs/[2025] é/study.journal"),
    ("journal+open://C:\\runs\\[2025]\\study.journal", "C:\\runs\\[2025]\\study.journal"),
    ("journal+open:///home/me/[x]/study.journal", "/home/me/[x]/study.journal"),
    ("C:\\runs\\a]b[\\study.journal", "C:\\runs\\a]b[\\study.journal"),
])
def test_journal_locations_are_never_url_parsed(location, path):
    where = StorageLocation.parse(location)
    assert where.kind == "journal" and where.path == path
    assert redact(location) == location and where.display == location


def test_a_plain_journal_path_gets_the_open_lock_on_windows(windows, tmp_path):
    assert StorageLocation.parse(str(tmp_path / "s.journal")).lock == "open"
    assert journal_location(tmp_path / "s.journal").startswith("journal+open://")
    assert kind_of("postgresql://u:p@h/db") == "rdb"


def test_a_plain_journal_path_falls_back_to_the_open_lock_without_symlinks(monkeypatch, tmp_path):
    def refused(*a, **k):
        raise OSError(1314, "A required privilege is not held by the client")

    monkeypatch.setattr(os, "symlink", refused)
    assert StorageLocation.parse(str(tmp_path / "s.journal")).lock == "open"


# -- names, start methods, workers, console -----------------------------------------------------------------
@pytest.mark.parametrize("name, safe", [("CON", "CON_"), ("nul.txt", "nul.txt_"), ("com1", "com1_"),
                                        ("run.", "run"), ("a b/c", "a-b-c"), ("CONSOLE", "CONSOLE"),
                                        ("...", "study")])
def test_study_folder_names_are_valid_on_every_file_system(name, safe):
    assert safe_name(name) == safe


def test_fork_is_refused_on_macos(monkeypatch):
    monkeypatch.setenv("MERLIN_KIT_SIMULATE", "macos")
    with pytest.raises(ConfigError, match="'fork' is unsafe on macOS") as info:
        validate(OptimizationConfig(data="sample", start_method="fork"), OptunaConfig())
    assert info.value.field == "start_method"


def test_default_workers_are_capped(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 128)
    assert _platform.default_workers() == _platform.DEFAULT_WORKERS_CAP <= MAX_WORKERS
    from merlin_kit._cli_args import worker_count

    assert worker_count(cli.build_parser().parse_args(["optimize"])) == _platform.DEFAULT_WORKERS_CAP
    # --cluster without --workers: 1, i.e. one task per Dask worker thread
    assert worker_count(cli.build_parser().parse_args(["optimize", "--cluster", "tcp://s:8786"])) == 1
    widgets = pytest.importorskip("merlin_kit.notebook.widgets")
    assert widgets.ConfigPanel().workers.max == _platform.DEFAULT_WORKERS_CAP  # the panel's default is valid


def test_a_legacy_code_page_console_prints_every_character():
    code = "from merlin_kit._platform import console_safe; console_safe(); print('best — é ✓')"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONIOENCODING": "cp437",
                                                            "PYTHONPATH": str(REPO)},
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode("cp437").strip() == "best ? é ?"


def test_waits_return_in_slices():
    event = threading.Event()
    t0 = time.monotonic()
    assert not _platform.wait_event(event, 0.6)
    assert 0.55 <= time.monotonic() - t0 < 2
    threading.Timer(0.3, event.set).start()
    assert _platform.wait_event(event)  # untimed: wakes up through its slices


# -- whole runs under simulated Windows ----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.simulated
def test_cli_optimize_with_two_spawn_workers_in_an_awkward_folder(tmp_path, data_csv):
    """`merlin-kit optimize --workers 2` exited 2 here (os.kill(pid, 0) raised in every process)."""
    out = tmp_path / "runs [2025] Jürgen ç" / "übung (1)"
    proc = merlin(["optimize", "--data", str(data_csv), "--params", *PARAMS, "--warmup", "200",
                   "--budget", "trials:8", "--workers", "2", "--sampler", "random", "--study", "CON",
                   "--out", str(out)], simulated_env())
    text, _ = proc.communicate(timeout=PROC_TIMEOUT)
    assert proc.returncode == 0, text
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["total_trials"] == 8 and summary["completed_trials"] == 8, summary
    assert (out / "results.csv").exists() and (out / "study.journal").exists()
    assert not [p for p in out.iterdir() if p.is_symlink()]
    assert summary["storage"] == "journal+open://" + str(out / "study.journal")  # Windows: the open lock


def _joinable_parent(tmp_path: Path, data_csv: Path, n_trials: int, data=None):
    journal = tmp_path / "shared [a] é" / "study.journal"
    journal.parent.mkdir()
    opt = OptimizationConfig(data=data if data is not None else str(data_csv), worker_processes=0,
                             optimize_params=PARAMS, warmup_bars=200)
    cfg = OptunaConfig(sampler="random", seed=3, study_name="joined", storage=f"journal+open://{journal}",
                       output_dir=tmp_path / "run", n_trials=n_trials)
    return start_optimization(opt, cfg), journal


@pytest.mark.slow
@pytest.mark.simulated
def test_a_worker_joins_a_journal_given_as_a_plain_path(tmp_path, data_csv):
    """The joining worker used the symlink lock and crashed on its first write (WinError 1314)."""
    run, journal = _joinable_parent(tmp_path, data_csv, 6)
    try:
        worker = merlin(["worker", "--storage", str(journal), "--study", "joined", "--workers", "2",
                         "--data", str(data_csv)], simulated_env())
        text, _ = worker.communicate(timeout=PROC_TIMEOUT)
        assert worker.returncode == 0, text
        assert run.wait(60)
    finally:
        run.stop()
    assert run.summary.completed_trials == 6, run.summary


@pytest.mark.slow
@pytest.mark.simulated
def test_uploaded_utf16_bytes_reach_the_spawned_workers_unchanged(tmp_path, data_csv):
    raw = data_csv.read_text().replace("\n", "\r\n").encode("utf-16")
    code = ("import sys, pathlib\n"
            "from merlin_kit.optimize import optimize, OptimizationConfig, OptunaConfig\n"
            "raw = pathlib.Path(sys.argv[1]).read_bytes()\n"
            f"run = optimize(OptimizationConfig(data=raw, worker_processes=2, optimize_params={PARAMS!r}, "
            "warmup_bars=200), OptunaConfig(sampler='random', seed=1, n_trials=4, output_dir=sys.argv[2]))\n"
            "print('complete', run.summary.completed_trials)\n")
    (tmp_path / "upload.bin").write_bytes(raw)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "upload.bin"), str(tmp_path / "run")],
                         cwd=REPO, env=simulated_env(), capture_output=True, text=True, timeout=PROC_TIMEOUT)
    assert out.returncode == 0 and "complete 4" in out.stdout, out.stdout + out.stderr


STOP_AND_KILL = f"""
import os, signal, sys, time
from optuna.trial import TrialState
from merlin_kit.optimize import start_optimization, OptimizationConfig, OptunaConfig
opt = OptimizationConfig(data=sys.argv[1], strategy={SLOW!r}, worker_processes=2, optimize_params={PARAMS!r},
                         warmup_bars=200)
run = start_optimization(opt, OptunaConfig(sampler='random', seed=1, n_trials=400, output_dir=sys.argv[2]))
def finished():
    return [t for t in run.study.get_trials(deepcopy=False) if t.state.is_finished()]
end = time.monotonic() + 90
while len(finished()) < 2 and time.monotonic() < end:
    time.sleep(0.1)
victim = run.workers[0].process
def victim_running():
    return [t for t in run.study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING
            and t.user_attrs.get('merlin.owner', {{}}).get('pid') == victim.pid]
while not victim_running() and time.monotonic() < end:
    time.sleep(0.02)
os.kill(victim.pid, signal.SIGKILL)  # the test of a killed worker: its running trial must be failed
victim.join(10)
end = time.monotonic() + 30
while time.monotonic() < end and not [t for t in run.study.get_trials(deepcopy=False)
                                      if t.state == TrialState.FAIL]:
    time.sleep(0.2)
run.stop()
states = [t.state.name for t in run.study.get_trials(deepcopy=False)]
print('failed', states.count('FAIL'), 'running', states.count('RUNNING'), 'reason', run.summary.stop_reason)
print('alive', [w.process.is_alive() for w in run.workers])
"""


@pytest.mark.slow
@pytest.mark.simulated
def test_a_killed_worker_and_stop(tmp_path, data_csv):
    out = subprocess.run([sys.executable, "-c", STOP_AND_KILL, str(data_csv), str(tmp_path / "run")], cwd=REPO,
                         env=simulated_env(), capture_output=True, text=True, timeout=PROC_TIMEOUT)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-2].startswith("failed 1 running 0 reason stopped by user"), out.stdout + out.stderr
    assert lines[-1] == "alive [False, False]"


@pytest.mark.slow
@pytest.mark.simulated
def test_workers_of_a_killed_parent_end(tmp_path, data_csv):
    out = tmp_path / "run"
    proc = merlin(["optimize", "--data", str(data_csv), "--strategy", SLOW, "--params", *PARAMS,
                   "--warmup", "200", "--budget", "trials:400", "--workers", "2", "--sampler", "random",
                   "--study", "orphans", "--out", str(out)], simulated_env())
    journal = out / "study.journal"
    pids: set[int] = set()
    end = time.monotonic() + 90
    while time.monotonic() < end and len(pids) < 2:
        if journal.exists():
            pids = {int(m) for m in _owner_pids(journal.read_text(encoding="utf-8", errors="replace"))}
        time.sleep(0.2)
    assert len(pids) == 2, "workers never recorded themselves"
    proc.kill()
    proc.wait(10)
    end = time.monotonic() + 30
    while time.monotonic() < end and any(_platform.pid_alive(p) and _state(p) != "Z" for p in pids):
        time.sleep(0.2)
    assert not [p for p in pids if _platform.pid_alive(p) and _state(p) != "Z"], "workers outlived their parent"


def _owner_pids(text: str) -> list[str]:
    import re

    return re.findall(r'"merlin\.owner":\{[^}]*"pid":(\d+)', text)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "X"


def test_cli_console_fix_is_harmless_on_captured_streams(capsys):
    _platform.console_safe()  # pytest's capture is not a reconfigurable console: nothing happens
    print("—")
    assert capsys.readouterr().out == "—\n"
    assert isinstance(io.StringIO(), io.TextIOBase)


@pytest.mark.parametrize("method", ["spawn", pytest.param("forkserver", marks=pytest.mark.posix_only)])
def test_a_failed_process_start_leaves_no_worker_and_no_temp_folder(tmp_path, monkeypatch, data_csv, method):
    import multiprocessing
    import multiprocessing.context
    import tempfile

    from merlin_kit.optimize._preflight import RUN_TMP_PREFIX

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    process_class = {"spawn": multiprocessing.context.SpawnProcess,
                     "forkserver": getattr(multiprocessing.context, "ForkServerProcess", None)}[method]
    real_start, started = process_class.start, []

    def start(self):
        if started:
            raise OSError(24, "Too many open files (simulated)")
        started.append(self)
        real_start(self)

    monkeypatch.setattr(process_class, "start", start)
    with pytest.raises(OSError, match="Too many open files"):
        start_optimization(OptimizationConfig(data=str(data_csv), worker_processes=3, optimize_params=PARAMS,
                                              warmup_bars=200, start_method=method),
                           OptunaConfig(n_trials=5, output_dir=tmp_path / "r"))
    assert len(started) == 1 and not started[0].is_alive()
    assert not multiprocessing.active_children()
    assert not list(tmp_path.glob(f"{RUN_TMP_PREFIX}*"))


def test_forkserver_with_a_long_tmpdir_is_refused_on_macos(monkeypatch, tmp_path):
    import tempfile

    monkeypatch.setenv("MERLIN_KIT_SIMULATE", "macos")
    assert _platform.forkserver_path_fits("/var/folders/ab/cdefghijklmnopqrstuvwxyz0123/T")
    long_tmp = tmp_path / ("x" * 90)
    long_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long_tmp))
    with pytest.raises(ConfigError, match="too long for the server's socket path") as info:
        validate(OptimizationConfig(data="sample", start_method="forkserver"), OptunaConfig())
    assert info.value.field == "start_method"


def test_a_replace_rides_out_a_short_sharing_violation_on_windows(windows, monkeypatch, tmp_path):
    real, calls = os.replace, []

    def busy_twice(src, dst):
        calls.append(dst)
        if len(calls) <= 2:
            raise PermissionError(13, "The process cannot access the file because it is being used by another process")
        real(src, dst)

    monkeypatch.setattr(os, "replace", busy_twice)
    (tmp_path / "a.tmp").write_text("new")
    _platform.replace_file(tmp_path / "a.tmp", tmp_path / "results.csv")
    assert (tmp_path / "results.csv").read_text() == "new" and len(calls) == 3
    monkeypatch.setattr(_platform, "REPLACE_RETRY_SECONDS", 0.3)
    monkeypatch.setattr(os, "replace", lambda s, d: (_ for _ in ()).throw(PermissionError(13, "in use")))
    with pytest.raises(PermissionError, match="is open in another program"):
        _platform.replace_file(tmp_path / "a.tmp", tmp_path / "results.csv")


def test_macos_host_id_is_the_hardware_uuid(monkeypatch):
    """macOS's host name changes with the network; the reaper must recognise its own machine's pids anyway."""
    out = ('+-o J314sAP  <class IOPlatformExpertDevice, id 0x100000219, registered, matched, active>\n'
           '    {\n      "IOPlatformSerialNumber" = "C02XXXX"\n'
           '      "IOPlatformUUID" = "1A2B3C4D-0000-1111-2222-333344445555"\n    }\n')
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=out))
    assert _platform._macos_uuid() == "1A2B3C4D-0000-1111-2222-333344445555"
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(FileNotFoundError("ioreg")))
    assert _platform._macos_uuid() is None  # then the host name
