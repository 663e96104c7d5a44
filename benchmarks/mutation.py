"""Mutation testing of the kit's arithmetic and bookkeeping: do the tests fail when the code is wrong?

Usage (from the repository root)::

    python benchmarks/mutation.py --max-mutants metrics.py=60   # about 15 minutes on two busy cores
    python benchmarks/mutation.py                      # every mutant of every module below (much longer)
    python benchmarks/mutation.py --module scoring     # one of them (a substring of the file name)
    python benchmarks/mutation.py --rev HEAD~1         # a git revision instead of the working tree
    python benchmarks/mutation.py --list               # the mutants, without running tests

Each mutant is one small change of one module's syntax tree:

* a comparison flipped (``<`` -> ``<=``, ``>=`` -> ``>``, ``==`` -> ``!=``, ...),
* an arithmetic operator swapped (``+`` <-> ``-``, ``*`` <-> ``/``, ``//`` -> ``/``, ``**`` -> ``*``),
* a number constant moved by one (``n`` -> ``n + 1``; ``0.0`` -> ``1.0``),
* ``and`` <-> ``or``, ``not x`` -> ``x``,
* a ``return EXPR`` replaced by ``return None``.

The repository is copied to a scratch folder once; for each mutant the module is rewritten there (the
working tree is never touched) and the module's fast tests run in a fork of a process that has already
imported numpy/pandas/numba/optuna/pytest, with a per-mutant timeout.  A mutant is *killed* when the tests
fail (or time out), *survived* when they pass.  The table gives module, mutants, killed, survived, score
(killed / mutants), then every survivor as ``file:line  mutation``.

Lines marked ``# pragma: no mutate``, docstrings and annotations are left alone.  The tests run with
``NUMBA_DISABLE_JIT=1``: a mutated kernel would otherwise be recompiled by numba for every mutant (seconds
each); the kernels' Python semantics are what is tested.
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: module -> the fast tests that exercise it (node ids relative to the repository)
#: (a test file that does not exist is left out, so the script also measures a checkout without it)
TARGETS: dict[str, list[str]] = {
    "merlin_kit/scoring.py": [
        "tests/test_scoring_units.py",
        "tests/test_metrics.py::test_minmax_score_bounds_inversion_and_missing",
        "tests/test_metrics.py::test_percentile_scores",
    ],
    "merlin_kit/metrics.py": ["tests/test_metrics.py"],
    "merlin_kit/optimize/_budget.py": [
        "tests/test_budget_units.py",
        "tests/test_integrity.py::test_resume_with_the_same_settings_and_another_budget_works",
    ],
    "merlin_kit/walkforward/_windows.py": ["tests/test_walkforward_windows.py"],
    "merlin_kit/walkforward/_stitch.py": [
        "tests/test_stitch_units.py",
        "tests/test_walkforward.py::test_no_completed_trial_makes_a_flat_window",
    ],
}
TIMEOUT = 60.0  # seconds a mutant's tests may take (the unmutated run takes a few)

CMP_SWAPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
             ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
BIN_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
             ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult}
SYMBOL = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.Is: "is",
          ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in", ast.Add: "+", ast.Sub: "-", ast.Mult: "*",
          ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**", ast.And: "and", ast.Or: "or"}


@dataclass
class Mutant:
    path: str
    line: int
    what: str
    index: int  # which mutation site (in walk order) of the module
    outcome: str = ""  # killed / survived / timeout


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _annotation_nodes(tree: ast.AST) -> set[int]:
    """Nodes inside type annotations (mutating them changes nothing at run time)."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        anns = []
        if isinstance(node, ast.AnnAssign):
            anns.append(node.annotation)
        elif isinstance(node, ast.arg) and node.annotation is not None:
            anns.append(node.annotation)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.returns is not None:
            anns.append(node.returns)
        for a in anns:
            ids.update(id(n) for n in ast.walk(a))
    return ids


def _sites(tree: ast.AST, source_lines: list[str]) -> list[tuple[ast.AST, str, str]]:
    """(node, kind, description) of every mutation site, in a deterministic walk order."""
    skip = _docstring_nodes(tree) | _annotation_nodes(tree)
    out = []
    for node in ast.walk(tree):
        if id(node) in skip or not hasattr(node, "lineno"):
            continue
        if "pragma: no mutate" in source_lines[node.lineno - 1]:
            continue
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in CMP_SWAPS:
                    new = CMP_SWAPS[type(op)]
                    out.append((node, f"cmp:{i}", f"{SYMBOL[type(op)]} -> {SYMBOL[new]}"))
        elif isinstance(node, ast.BinOp) and type(node.op) in BIN_SWAPS:
            out.append((node, "bin", f"{SYMBOL[type(node.op)]} -> {SYMBOL[BIN_SWAPS[type(node.op)]]}"))
        elif isinstance(node, ast.AugAssign) and type(node.op) in BIN_SWAPS:
            out.append((node, "aug", f"{SYMBOL[type(node.op)]}= -> {SYMBOL[BIN_SWAPS[type(node.op)]]}="))
        elif isinstance(node, ast.BoolOp):
            other = "or" if isinstance(node.op, ast.And) else "and"
            out.append((node, "bool", f"{SYMBOL[type(node.op)]} -> {other}"))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            out.append((node, "not", "not x -> x"))
        elif (isinstance(node, ast.Constant) and isinstance(node.value, (int, float))
              and not isinstance(node.value, bool)):
            out.append((node, "const", f"{node.value!r} -> {node.value + 1!r}"))
        elif isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            out.append((node, "return", "return ... -> return None"))
    return out


class _Apply(ast.NodeTransformer):
    def __init__(self, target: ast.AST, kind: str) -> None:
        self.target, self.kind = target, kind

    def visit(self, node):  # type: ignore[override]
        if node is not self.target:
            return self.generic_visit(node)
        k = self.kind
        if k.startswith("cmp:"):
            i = int(k.split(":")[1])
            node.ops[i] = CMP_SWAPS[type(node.ops[i])]()
        elif k in ("bin", "aug"):
            node.op = BIN_SWAPS[type(node.op)]()
        elif k == "bool":
            node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        elif k == "not":
            return node.operand
        elif k == "const":
            return ast.copy_location(ast.Constant(node.value + 1), node)
        elif k == "return":
            return ast.copy_location(ast.Return(ast.Constant(None)), node)
        return node


def mutants_of(root: Path, path: str) -> list[Mutant]:
    source = (root / path).read_text()
    tree = ast.parse(source)
    return [Mutant(path, node.lineno, what, i) for i, (node, _, what) in enumerate(_sites(tree, source.splitlines()))]


def mutated_source(source: str, index: int) -> str:
    tree = ast.parse(source)
    node, kind, _ = _sites(tree, source.splitlines())[index]
    new = _Apply(node, kind).visit(copy.copy(tree))
    return ast.unparse(ast.fix_missing_locations(new))


def _run_tests(scratch: Path, tests: list[str], timeout: float) -> str:
    """'passed', 'failed' or 'timeout': the tests in a forked child (modules of the kit imported afresh)."""
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.chdir(scratch)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            import pytest

            # only the plugins these tests need (PYTEST_DISABLE_PLUGIN_AUTOLOAD is set): loading every installed
            # plugin (jupyter, playwright, ...) costs seconds per mutant
            code = pytest.main(["-x", "-q", "-p", "no:cacheprovider", "-p", "_hypothesis_pytestplugin",
                                "-p", "pytest_timeout", "--timeout", str(int(timeout)), "-W", "ignore", *tests])
            os._exit(int(code))
        except BaseException:
            os._exit(99)
    end = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            return "passed" if code == 0 else "failed"
        if time.monotonic() > end:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout"
        time.sleep(0.05)


def _scratch_copy(rev: str | None) -> Path:
    """The package and tests in ``TMP/repo`` (the working tree, or git revision ``rev``), with
    ``TMP/shared`` -> the reference data beside the repository.  Mutants are made from this copy, so
    editing the working tree during a run changes nothing."""
    scratch = Path(tempfile.mkdtemp(prefix="merlin-mutation-")) / "repo"
    if rev is not None:
        scratch.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "merlin_kit", "tests", "pyproject.toml",
                                  "README.md"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive, check=True)
    else:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".git", "merlin_runs", ".pytest_cache")
        for name in ("merlin_kit", "tests"):
            shutil.copytree(REPO / name, scratch / name, ignore=ignore)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(REPO / name, scratch / name)
    shared = REPO.parent / "shared"
    if shared.exists():  # the tests on the reference data skip without ../shared
        (scratch.parent / "shared").symlink_to(shared)
    return scratch


def _spread(items: list, most: int | None) -> list:
    """At most ``most`` of ``items``, evenly spaced (deterministic), all of them when ``most`` is None."""
    if most is None or len(items) <= most:
        return items
    return [items[round(i * (len(items) - 1) / (most - 1))] for i in range(most)] if most > 1 else items[:1]


def _preload() -> None:
    """Import the heavy third-party modules once, before forking (each child then starts in a second)."""
    import numba  # noqa: F401
    import numpy  # noqa: F401
    import optuna  # noqa: F401
    import pandas  # noqa: F401
    import pytest  # noqa: F401
    try:
        import hypothesis  # noqa: F401
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--module", action="append", help="only modules whose path contains this (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--timeout", type=float, default=TIMEOUT, help=f"seconds per mutant (default {TIMEOUT:g})")
    ap.add_argument("--rev", help="mutate and test this git revision instead of the working tree (e.g. HEAD~3)")
    ap.add_argument("--max-mutants", action="append", default=[], metavar="MODULE=N",
                    help="at most N mutants of modules whose path contains MODULE, evenly spread over the file "
                         "(e.g. metrics.py=60); default: all")
    args = ap.parse_args(argv)
    caps = {k: int(v) for k, v in (c.split("=", 1) for c in args.max_mutants)}
    scratch = _scratch_copy(args.rev)
    targets = {p: [t for t in tests if (scratch / t.split("::")[0]).exists()]
               for p, tests in TARGETS.items() if not args.module or any(m in p for m in args.module)}
    all_mutants = {p: _spread(mutants_of(scratch, p), next((n for k, n in caps.items() if k in p), None))
                   for p in targets}
    if args.list:
        shutil.rmtree(scratch.parent, ignore_errors=True)
        for p, ms in all_mutants.items():
            for m in ms:
                print(f"{p}:{m.line}  {m.what}")
        return 0
    os.environ["NUMBA_DISABLE_JIT"] = "1"  # before numba is imported (see the module docstring)
    os.environ["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    _preload()
    sys.path.insert(0, str(scratch))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(scratch), os.environ.get("PYTHONPATH")]))
    started = time.monotonic()
    try:
        rows = []
        for path, tests in targets.items():
            original = (scratch / path).read_text()
            print(f"{path}: {len(all_mutants[path])} mutants; tests: {' '.join(tests) or '(none)'}", flush=True)
            if not tests:  # nothing to run: every mutant survives
                for m in all_mutants[path]:
                    m.outcome = "survived"
                ms = all_mutants[path]
                rows.append((path, len(ms), 0, len(ms)))
                continue
            outcome = _run_tests(scratch, tests, args.timeout * 3)
            if outcome != "passed":
                print(f"{path}: its tests do not pass unmutated ({outcome}): {' '.join(tests)}", file=sys.stderr)
                return 2
            for m in all_mutants[path]:
                (scratch / path).write_text(mutated_source(original, m.index))
                res = _run_tests(scratch, tests, args.timeout)
                m.outcome = "survived" if res == "passed" else ("timeout" if res == "timeout" else "killed")
                print(f"  {m.outcome:8s} {path}:{m.line}  {m.what}", flush=True)
            (scratch / path).write_text(original)
            ms = all_mutants[path]
            killed = sum(m.outcome != "survived" for m in ms)
            rows.append((path, len(ms), killed, len(ms) - killed))
    finally:
        shutil.rmtree(scratch.parent, ignore_errors=True)
    print()
    print(f"{'module':40s} {'mutants':>8s} {'killed':>7s} {'survived':>9s} {'score':>7s}")
    for path, n, killed, survived in rows:
        print(f"{path:40s} {n:8d} {killed:7d} {survived:9d} {100.0 * killed / n if n else 100.0:6.1f}%")
    n_all = sum(r[1] for r in rows)
    k_all = sum(r[2] for r in rows)
    print(f"{'total':40s} {n_all:8d} {k_all:7d} {n_all - k_all:9d} {100.0 * k_all / n_all if n_all else 100.0:6.1f}%")
    print(f"({time.monotonic() - started:.0f} s)")
    survivors = [m for ms in all_mutants.values() for m in ms if m.outcome == "survived"]
    if survivors:
        print("\nsurvivors:")
        for m in survivors:
            print(f"  {m.path}:{m.line}  {m.what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
