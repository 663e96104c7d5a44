"""The house rules of the optimisation package: typed run state with the 0.1 JSON shape, one storage
location parser, one text/table report, and a parent that reaches into the worker module only for its
two entry points."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from merlin_kit.errors import ConfigError
from merlin_kit.optimize._storage import default_lock
from merlin_kit.optimize import (
    OptimizationConfig, OptunaConfig, Progress, RunSummary, StorageLocation, optimize, progress_text, results_table,
    summary_lines,
)

OPTIMIZE_PKG = Path(__file__).resolve().parents[1] / "merlin_kit" / "optimize"

#: the keys of summary.json / ``merlin-kit optimize --json`` since 0.1 (their shape must not change)
SUMMARY_KEYS = {
    "method", "study_name", "strategy", "target", "direction", "budget_mode", "total_trials", "completed_trials",
    "pruned_trials", "failed_trials", "study_trials", "best_trial_number", "best_value", "best_objective",
    "best_params", "optimization_time_seconds", "trials_per_second", "workers", "worker_reports", "storage",
    "multiprocess_mode", "start_method", "sampler", "stop_reason", "warnings",
    # added with multi-objective runs (0.1 readers ignore them)
    "objectives", "constraints", "feasible_trials", "pareto_front",
}
WORKER_REPORT_KEYS = {"id", "pid", "exitcode", "trials", "failed", "last_error", "traceback"}
PROGRESS_KEYS = {
    "study_name", "budget_mode", "budget", "done", "fraction", "finished", "complete", "pruned", "failed", "running",
    "since_improvement", "best_value", "best_trial", "best_params", "elapsed", "trials_per_second", "eta_seconds",
    "workers", "finished_run",
}


def _progress(**kw) -> Progress:
    base = dict(study_name="s", budget_mode="trials", budget=50.0, done=7.0, fraction=0.14, finished=7, complete=7,
                pruned=0, failed=0, running=1, since_improvement=None, best_value=None, best_trial=None,
                best_params={}, elapsed=30.0, trials_per_second=0.2, eta_seconds=None, workers=[],
                finished_run=False)
    return Progress(**{**base, **kw})


def test_progress_text_per_budget_mode():
    assert progress_text(_progress(budget_mode="trials", budget=50, finished=7)) == "7 / 50 trials"
    assert progress_text(_progress(budget_mode="time", budget=120, elapsed=30, finished=3)) == \
        "30 s / 2 min 00 s (3 trials)"
    assert progress_text(_progress(budget_mode="convergence", budget=20, done=4, finished=9)) == \
        "4 / 20 trials without improvement (9 trials)"


@pytest.fixture(scope="module")
def finished_run(write_sample_csv, tmp_path_factory):
    csv = write_sample_csv("structure.csv", 3000)
    return optimize(
        OptimizationConfig(data=str(csv), warmup_bars=200, worker_processes=1,
                           optimize_params=["maLength", "closeCountLong"]),
        OptunaConfig(n_trials=6, sampler="random", seed=3, output_dir=tmp_path_factory.mktemp("run")),
    )


def test_summary_and_progress_keep_the_json_shape(finished_run):
    run = finished_run
    assert isinstance(run.summary, RunSummary)
    d = run.summary.to_dict()
    assert set(d) == SUMMARY_KEYS
    assert all(set(w) == WORKER_REPORT_KEYS for w in d["worker_reports"])
    assert json.loads((run.run_dir / "summary.json").read_text()) == json.loads(json.dumps(d, default=str))
    assert run.summary.total_trials == d["total_trials"] == 6
    assert run.summary["total_trials"] == 6  # dict-style reads of 0.1 notebooks keep working
    p = run.progress()
    assert PROGRESS_KEYS <= set(p.to_dict()) and p.finished == 6 and p.finished_run is True


def test_one_report_for_cli_and_notebook(finished_run):
    run = finished_run
    table = results_table(run)
    assert list(table.columns[:3]) == ["score", "trial", "state"]  # the target first
    assert table["trial"].iloc[0] == run.best.trial_number
    compact = results_table(run, compact=True)
    assert set(compact.columns) < set(table.columns) and {"maLength", "closeCountLong"} <= set(compact.columns)
    assert run.results_frame().equals(table)  # results.csv is the same table
    lines = summary_lines(run)
    assert lines[0].startswith(f"Study {run.study_name}: 6 trials") and f"trial {run.best.trial_number}" in lines[1]


def test_storage_location_is_parsed_once(tmp_path):
    journal = StorageLocation.journal(tmp_path / "s.journal", lock="open")
    assert journal.kind == "journal" and journal.lock == "open" and journal.path == str(tmp_path / "s.journal")
    assert StorageLocation.parse(journal.url) == journal and journal.dashboard_target == journal.path
    assert journal.in_folder(tmp_path) and not journal.in_folder(tmp_path / "other")
    plain = StorageLocation.parse(str(tmp_path / "p.journal"))
    assert plain.kind == "journal" and plain.lock == default_lock(str(tmp_path))  # symlink where it works
    pg = StorageLocation.parse("postgresql://alice:s3cret@db.example:5432/optuna")
    assert pg.kind == "rdb" and pg.path is None and "s3cret" not in pg.display and "alice:***@" in pg.display
    assert str(pg) == pg.display  # printing a location never shows its password
    assert StorageLocation.parse("redis://:pw@127.0.0.1:6379/0?prefix=x").kind == "redis"
    # a Windows path with brackets is a journal path, not a broken URL
    win = StorageLocation.parse(r"C:\runs\[2025]\study.journal")
    assert win.kind == "journal" and win.display == r"C:\runs\[2025]\study.journal"
    with pytest.raises(ConfigError, match=r"unknown scheme 'postgress://'") as info:
        StorageLocation.parse("postgress://u:secret@host/db")
    assert "secret" not in str(info.value)


def test_parent_uses_only_the_workers_entry_points():
    from_worker = {a.name for module in ("_engine.py", "_start.py")
                   for node in ast.walk(ast.parse((OPTIMIZE_PKG / module).read_text()))
                   if isinstance(node, ast.ImportFrom) and node.module == "_worker" for a in node.names}
    assert from_worker == {"WorkerLoop", "run_worker"}  # the in-process loop (engine), the process target (_start)


def test_no_module_is_a_giant():
    package = OPTIMIZE_PKG.parent
    sizes = {str(p.relative_to(package)): len(p.read_text().splitlines()) for p in package.rglob("*.py")}
    assert max(sizes.values()) <= 600, {k: v for k, v in sizes.items() if v > 600}



#: the layers, bottom first: a module imports (at module level) only from its own layer or the ones before
LAYERS = ["errors", "_memory", "_platform", "data", "indicators", "strategies", "metrics", "scoring", "backtest", "optimize",
          "walkforward", "robustness", "notebook", "cli"]
SAME_LEVEL = {"metrics": "strategies", "scoring": "metrics", "robustness": "walkforward", "_cli_show": "cli", "_cli_args": "cli"}


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.startswith("merlin_kit.") else module
    top = SAME_LEVEL.get(top, top)
    return LAYERS.index(top)


def _module_level_imports(path: Path, package: str) -> set[str]:
    """merlin_kit modules imported at module level (not inside functions or TYPE_CHECKING blocks)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            continue
        for sub in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) else ():
            if isinstance(sub, ast.ImportFrom) and sub.level:
                base = package.split(".")[: len(package.split(".")) - sub.level + 1]
                found.add(".".join(base + ([sub.module] if sub.module else [])))
            elif isinstance(sub, ast.ImportFrom) and (sub.module or "").startswith("merlin_kit."):
                found.add(sub.module)
            elif isinstance(sub, ast.Import):
                found.update(a.name for a in sub.names if a.name.startswith("merlin_kit."))
    return {m for m in found if m.startswith("merlin_kit.")}


def test_each_layer_imports_only_the_layers_before_it():
    root = OPTIMIZE_PKG.parent
    wrong = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        name = ".".join(parts)
        if name in ("merlin_kit", "merlin_kit.__main__"):
            continue  # the package's front door re-exports every layer
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for imported in _module_level_imports(path, package):
            if imported != "merlin_kit" and _layer(imported) > _layer(name):
                wrong.append(f"{name} imports {imported}")
    assert not wrong, wrong
