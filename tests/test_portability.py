"""Portability lint: calls that only work on POSIX stay in the places that guard them.

Windows has no ``os.killpg``, no ``start_new_session``, no SIGKILL/SIGHUP/SIGUSR1
..., treats ``os.kill(pid, 0)`` as a Ctrl-C (not a liveness probe), and
``os.open`` without ``O_BINARY`` turns every ``\\n`` into ``\\r\\n``.  A new use of
any of them anywhere in ``merlin_kit`` fails this test unless it is added to
:data:`ALLOWED` with the reason it is safe there.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "merlin_kit"
POSIX_SIGNALS = {"SIGKILL", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGCHLD", "SIGPIPE", "SIGQUIT", "SIGSTOP",
                 "SIGCONT", "SIGTSTP", "SIGTTIN", "SIGTTOU", "SIGWINCH", "SIGVTALRM", "SIGPROF"}

#: (module, function, finding) -> why it is safe there
ALLOWED: dict[tuple[str, str, str], str] = {
    ("_platform.py", "pid_alive", "os.kill(pid, 0)"): "the POSIX branch, after `if is_windows()` returned",
    ("_platform.py", "new_process_group", "start_new_session"): "the POSIX branch, after `if os.name == 'nt'`",
    ("optimize/_worker.py", "_group_signals", "signal.SIGHUP"): "behind `hasattr(signal, 'SIGHUP')`",
}


def _findings(path: Path) -> list[tuple[str, str, int]]:
    """(function, finding, line) of every non-portable use in one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, str, int]] = []

    def visit(node: ast.AST, where: str) -> None:
        for child in ast.iter_child_nodes(node):
            name = where
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = child.name if where == "<module>" else f"{where}.{child.name}"
            check(child, name)
            visit(child, name)

    def check(node: ast.AST, where: str) -> None:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                isinstance(node.func.value, ast.Name) and node.func.value.id == "os":
            fn = node.func.attr
            if fn == "kill" and len(node.args) == 2 and isinstance(node.args[1], ast.Constant) \
                    and node.args[1].value == 0:
                found.append((where, "os.kill(pid, 0)", node.lineno))
            if fn == "open" and len(node.args) >= 2 and "O_BINARY" not in ast.dump(node.args[1]):
                found.append((where, "os.open without O_BINARY", node.lineno))
        if isinstance(node, ast.Attribute) and node.attr == "killpg":
            found.append((where, "killpg", node.lineno))
        if isinstance(node, ast.keyword) and node.arg == "start_new_session":
            found.append((where, "start_new_session", getattr(node, "lineno", 0)))
        if isinstance(node, ast.Constant) and node.value == "start_new_session":
            found.append((where, "start_new_session", node.lineno))
        if isinstance(node, ast.Attribute) and node.attr in POSIX_SIGNALS:
            found.append((where, f"signal.{node.attr}", node.lineno))

    visit(tree, "<module>")
    return found


def test_posix_only_calls_stay_in_their_guarded_places():
    unexpected = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        for where, what, line in _findings(path):
            if (module, where, what) not in ALLOWED:
                unexpected.append(f"{module}:{line} in {where}: {what}")
    assert not unexpected, "non-portable calls (guard them and add them to ALLOWED):\n" + "\n".join(unexpected)


def test_the_lint_sees_what_it_must(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os, signal, subprocess\n"
                   "def f(pid):\n"
                   "    os.kill(pid, 0)\n"
                   "    os.killpg(pid, signal.SIGKILL)\n"
                   "    subprocess.Popen(['x'], start_new_session=True)\n"
                   "    os.open('x', os.O_WRONLY | os.O_CREAT, 0o600)\n"
                   "    os.open('y', os.O_WRONLY | getattr(os, 'O_BINARY', 0))\n")
    assert sorted(what for _, what, _ in _findings(bad)) == sorted(
        ["os.kill(pid, 0)", "killpg", "signal.SIGKILL", "start_new_session", "os.open without O_BINARY"])


def test_the_kit_imports_without_posix_only_signals():
    """Windows' signal module lacks SIGKILL, SIGHUP, ...: a module-level use would break every import there."""
    import subprocess
    import sys

    code = ("import signal\n"
            f"for name in {sorted(POSIX_SIGNALS)!r}:\n"
            "    if hasattr(signal, name):\n"
            "        delattr(signal, name)\n"
            "import merlin_kit, merlin_kit.optimize, merlin_kit.cli, merlin_kit.walkforward, merlin_kit.robustness\n"
            "import merlin_kit.optimize._worker, merlin_kit.notebook.dashboard\n"
            "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True,
                         timeout=120, env={**__import__("os").environ, "PYTHONPATH": str(PACKAGE.parent)})
    assert out.stdout.strip() == "ok", out.stderr
