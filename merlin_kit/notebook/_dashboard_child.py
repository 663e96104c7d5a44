"""Launcher of the optuna-dashboard process: it ends when its owner ends.

Run as a script by :func:`merlin_kit.notebook.dashboard.dashboard`::

    python _dashboard_child.py --owner-pid PID [--pdeathsig] -- STORAGE --host H --port P ...

Two guards, so that a dashboard never outlives the Python (CLI or notebook
kernel) that started it, however that Python ends (SIGTERM, SIGHUP, SIGKILL,
a kernel shut down):

* ``--pdeathsig`` (Linux): ``prctl(PR_SET_PDEATHSIG, SIGTERM)``, so the kernel
  sends SIGTERM the moment the owner dies.  Linux sends it when the *thread*
  that started this process exits, so the owner passes the flag only when it
  starts us from its main thread.
* a watchdog thread (every platform): every ``POLL_S`` seconds it checks that
  the owner is still alive (POSIX: ``os.getppid()`` is still the owner;
  Windows: a handle on the owner process is not signalled) and calls
  ``os._exit`` when it is not.

Then it runs optuna-dashboard's own command line (``optuna_dashboard._cli.main``)
with the arguments after ``--``.  This file is run by path, not as
``merlin_kit...``, so it needs only the standard library and optuna-dashboard
(and does not import the kit); its folder is taken off ``sys.path`` first so
that the kit's modules cannot shadow anything.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

POLL_S = 1.0
EXIT_OWNER_GONE = 143  # as if ended by SIGTERM


def _set_pdeathsig() -> bool:
    """Ask Linux to SIGTERM this process when its parent (thread) dies; False where unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _owner_alive_check(owner_pid: int):
    """A function returning False once the owner process has ended."""
    if os.name == "nt":  # pragma: no cover - Windows
        import ctypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        SYNCHRONIZE, WAIT_OBJECT_0 = 0x00100000, 0
        handle = kernel32.OpenProcess(SYNCHRONIZE, False, owner_pid)
        if not handle:
            return lambda: False
        # holding the handle keeps the pid from being reused while we watch it
        return lambda: kernel32.WaitForSingleObject(handle, 0) != WAIT_OBJECT_0
    # POSIX: when the owner dies we are re-parented (to init or a subreaper), so getppid changes
    return lambda: os.getppid() == owner_pid


def _watch(alive, poll_s: float) -> None:
    while alive():
        time.sleep(poll_s)
    os._exit(EXIT_OWNER_GONE)


def start_guards(owner_pid: int, pdeathsig: bool, poll_s: float = POLL_S) -> None:
    if pdeathsig:
        _set_pdeathsig()
    alive = _owner_alive_check(owner_pid)
    if not alive():  # the owner died before the guards were in place
        os._exit(EXIT_OWNER_GONE)
    threading.Thread(target=_watch, args=(alive, poll_s), name="owner-watchdog", daemon=True).start()


def main(argv: list[str]) -> None:
    if "--" not in argv:
        sys.exit("usage: _dashboard_child.py --owner-pid PID [--pdeathsig] -- OPTUNA_DASHBOARD_ARGS...")
    split = argv.index("--")
    own, rest = argv[:split], argv[split + 1:]
    owner_pid, pdeathsig = None, False
    it = iter(own)
    for arg in it:
        if arg == "--owner-pid":
            owner_pid = int(next(it))
        elif arg == "--pdeathsig":
            pdeathsig = True
        else:
            sys.exit(f"_dashboard_child.py: unknown argument {arg!r}")
    if owner_pid is None:
        sys.exit("_dashboard_child.py: --owner-pid is required")
    start_guards(owner_pid, pdeathsig)
    # SIGTERM (from the owner's stop() or the death signal) must end the server: restore the default
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

    from optuna_dashboard._cli import main as dashboard_main

    sys.argv = ["optuna-dashboard", *rest]
    dashboard_main()


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or os.curdir) == here:
        del sys.path[0]
    main(sys.argv[1:])
