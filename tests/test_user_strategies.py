"""User strategies: the registry, installed plug-ins, notebook-defined strategies, early failures.

Issue 5 "Must show":
* a notebook-defined strategy optimised with 2 ``spawn`` workers under papermill, and the same with
  ``forkserver``: :func:`test_notebook_strategy_optimised_with_two_workers`;
* an installed plug-in strategy (``tests/plugin_pkg``, installed into a temporary directory) found
  through the ``merlin_kit.strategies`` entry point: :meth:`TestInstalledPlugin.test_plugin_found_through_entry_point` and
  :meth:`TestInstalledPlugin.test_plugin_strategy_optimised_with_spawn_workers`.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import threading
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

import merlin_kit as mk
from merlin_kit.errors import ConfigError, StrategyError
from merlin_kit.optimize import OptimizationConfig, OptunaConfig, optimize
from merlin_kit.optimize._runconfig import strategy_from_ref, strategy_to_ref
from merlin_kit.optimize._start import resolve_start_method
from merlin_kit.optimize._trust import TrustPolicy
from merlin_kit.strategies import (
    S01TrailingMA, get_strategy, list_strategies, refresh_plugins, register_strategy, unregister_strategy,
)

REPO = Path(__file__).resolve().parents[1]
PLUGIN_SRC = REPO / "tests" / "plugin_pkg"
NOTEBOOK = REPO / "notebooks" / "04_custom_strategy.ipynb"
FEW = ["closeCountLong", "closeCountShort"]


@pytest.fixture(scope="module")
def small_csv(write_sample_csv) -> Path:
    return write_sample_csv("small.csv", 3000)


@pytest.fixture
def no_children():
    """Every early failure must happen before a worker process starts."""
    before = set(multiprocessing.active_children())
    yield
    assert set(multiprocessing.active_children()) - before == set(), "a worker process was started"


def opt_config(small_csv, strategy, **kwargs) -> OptimizationConfig:
    kwargs.setdefault("optimize_params", FEW)
    kwargs.setdefault("worker_processes", 2)
    return OptimizationConfig(data=str(small_csv), strategy=strategy, start_method="spawn", warmup_bars=200, **kwargs)


def quick() -> OptunaConfig:
    return OptunaConfig(n_trials=4, sampler="random", seed=1)


# -- registry --------------------------------------------------------------------------------------
class _Custom(S01TrailingMA):
    id = "test_custom_registered"


def test_resolution_order_and_objects():
    assert isinstance(get_strategy("s01_trailing_ma"), S01TrailingMA)
    assert get_strategy(" s04_stochrsi ").id == "s04_stochrsi"
    assert get_strategy("tests._strategies:SlowS01").id == "test_slow_s01"
    inst = _Custom()
    assert get_strategy(inst) is inst
    assert type(get_strategy(_Custom)) is _Custom
    with pytest.raises(StrategyError, match="unknown strategy 'nope'.*s01_trailing_ma"):
        get_strategy("nope")
    with pytest.raises(StrategyError, match="cannot import module 'no_such_module_xyz'"):
        get_strategy("no_such_module_xyz:Thing")
    with pytest.raises(StrategyError, match="not a merlin_kit Strategy"):
        get_strategy("merlin_kit.data:sample")
    with pytest.raises(StrategyError, match="a strategy is an id"):
        get_strategy(42)


def test_register_strategy_decorator_replace_and_builtin_guard():
    try:
        assert register_strategy(_Custom) is _Custom
        assert "test_custom_registered" in list_strategies()
        assert type(get_strategy("test_custom_registered")) is _Custom

        class Again(_Custom):  # re-running a notebook cell re-registers the id
            id = "test_custom_registered"

        register_strategy(Again)
        assert type(get_strategy("test_custom_registered")) is Again

        class Clash(S01TrailingMA):
            id = "s01_trailing_ma"

        with pytest.raises(StrategyError, match="taken by a built-in"):
            register_strategy(Clash)
        assert type(get_strategy("s01_trailing_ma")) is S01TrailingMA  # built-ins come first
        with pytest.raises(StrategyError, match="not a Strategy subclass with an id"):
            register_strategy(dict)
    finally:
        unregister_strategy("test_custom_registered")
    assert "test_custom_registered" not in list_strategies()


# -- an installed plug-in --------------------------------------------------------------------------
def _build_wheel_by_hand(src: Path, out: Path) -> Path:
    """A pure-Python wheel of the plug-in, for environments without setuptools+wheel (pip installs it)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    meta = tomllib.loads((src / "pyproject.toml").read_text())["project"]
    name, version = meta["name"].replace("-", "_"), meta["version"]
    dist_info = f"{name}-{version}.dist-info"
    files: dict[str, bytes] = {}
    for path in sorted((src / "merlin_test_plugin").glob("*.py")):
        files[f"merlin_test_plugin/{path.name}"] = path.read_bytes()
    files[f"{dist_info}/METADATA"] = f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {version}\n".encode()
    files[f"{dist_info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: merlin_kit-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    eps = meta["entry-points"]["merlin_kit.strategies"]
    files[f"{dist_info}/entry_points.txt"] = (
        "[merlin_kit.strategies]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items())
    ).encode()
    record = []
    for arc, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{arc},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = out / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for arc, data in files.items():
            zf.writestr(arc, data)
    return wheel


def install_plugin(target: Path, work: Path) -> str:
    """``pip install`` tests/plugin_pkg into ``target`` without network; returns how it was built."""
    src = work / "plugin_pkg"
    shutil.copytree(PLUGIN_SRC, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check",
           "--target", str(target)]
    if importlib.util.find_spec("setuptools") and importlib.util.find_spec("wheel"):
        how, args = "source (setuptools, --no-build-isolation)", ["--no-build-isolation", str(src)]
    else:  # no build backend here: build the (pure-Python) wheel ourselves, pip still installs it
        how, args = "hand-built wheel", [str(_build_wheel_by_hand(src, work))]
    proc = subprocess.run(pip + args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"pip install of the test plug-in ({how}) failed:\n{proc.stdout}\n{proc.stderr}"
    return how


@pytest.fixture(scope="class")
def plugin(tmp_path_factory):
    """The test plug-in installed into a temporary directory on sys.path and PYTHONPATH (workers see it)."""
    work = tmp_path_factory.mktemp("plugin")
    target = work / "site"
    how = install_plugin(target, work)
    assert (target / "merlin_test_plugin" / "__init__.py").exists()
    assert list(target.glob("merlin_test_plugin-*.dist-info/entry_points.txt"))
    sys.path.insert(0, str(target))
    old_pythonpath = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(target)] + ([old_pythonpath] if old_pythonpath else []))
    refresh_plugins()
    try:
        yield how
    finally:
        sys.path.remove(str(target))
        if old_pythonpath is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old_pythonpath
        for mod in [m for m in sys.modules if m == "merlin_test_plugin" or m.startswith("merlin_test_plugin.")]:
            del sys.modules[mod]
        refresh_plugins()
        shutil.rmtree(work, ignore_errors=True)


class TestInstalledPlugin:
    """tests/plugin_pkg installed for this class only (the fixture removes it afterwards)."""

    def test_plugin_found_through_entry_point(self, plugin, small_csv):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            names = list_strategies()
        assert "plugin_breakout" in names
        assert {"s01_trailing_ma", "s04_stochrsi"} <= set(names)
        # the broken entry point of the same package is left out with a warning naming it, not a crash
        assert "plugin_broken" not in names
        msgs = [str(w.message) for w in caught]
        assert any("plugin_broken" in m and "merlin_test_plugin.broken:Broken" in m and "broken on purpose" in m
                   for m in msgs), msgs

        strategy = get_strategy("plugin_breakout")
        assert type(strategy).__module__ == "merlin_test_plugin"
        assert strategy.id == "plugin_breakout"
        with pytest.raises(StrategyError, match=r"plug-in 'plugin_broken'.*merlin-test-plugin 0\.1\.0.*broken on purpose"):
            get_strategy("plugin_broken")

        result = mk.backtest(str(small_csv), "plugin_breakout", {"length": 30})
        assert result.metrics["total_trades"] > 10
        assert result.params == {"length": 30, "qty": 1.0}
        assert np.isfinite(result.equity.to_numpy()).all()

    def test_plugin_strategy_optimised_with_spawn_workers(self, plugin, small_csv):
        run = optimize(OptimizationConfig(data=str(small_csv), strategy="plugin_breakout", worker_processes=2,
                                          start_method="spawn", warmup_bars=200),
                       OptunaConfig(n_trials=10, sampler="random", seed=3))
        assert run.summary.strategy == "plugin_breakout"
        assert run.summary.total_trials == 10
        assert run.summary.completed_trials == 10
        assert run.run_config.strategy_ref == {"spec": "plugin_breakout"}  # the workers found it by name
        assert all(w.exitcode == 0 for w in run.summary.worker_reports)
        assert {r.params["length"] for r in run.results} <= set(range(5, 61, 5))


def test_plugin_gone_after_cleanup():
    refresh_plugins()
    assert "plugin_breakout" not in list_strategies()
    with pytest.raises(StrategyError, match="unknown strategy 'plugin_breakout'"):
        get_strategy("plugin_breakout")


# -- a strategy defined in __main__ (as in a notebook or a script), by class and by registered id -----
def _main_defined_class():
    """A subclass whose module is ``__main__``: cloudpickle must ship it by value, as from a notebook cell."""
    cls = type("MainDefined", (S01TrailingMA,), {"id": "test_main_defined", "__module__": "__main__"})
    return cls


def test_main_defined_strategy_by_class_and_registered_id(small_csv):
    import cloudpickle

    cls = _main_defined_class()
    key = "k" * 32
    ref = strategy_to_ref(cls, get_strategy(cls), key)
    assert set(ref) == {"pickle", "hmac"}  # the tag authenticates the pickle for workers holding the run's key
    assert b"test_main_defined" in base64.b64decode(ref["pickle"])  # the class itself, by value
    back = strategy_from_ref(ref, TrustPolicy(key))
    assert back.id == "test_main_defined"
    assert cloudpickle.loads(base64.b64decode(ref["pickle"])).run.__qualname__ == "S01TrailingMA.run"
    register_strategy(cls)
    try:  # a registered id is unknown to a fresh spawn worker: it travels by value too
        run = optimize(opt_config(small_csv, "test_main_defined"), OptunaConfig(n_trials=4, sampler="random", seed=2))
        assert set(run.run_config.strategy_ref) == {"pickle", "hmac"}
        assert run.summary.completed_trials == 4
        assert run.summary.strategy == "test_main_defined"
        assert [w.exitcode for w in run.summary.worker_reports] == [0, 0]
    finally:
        unregister_strategy("test_main_defined")
    assert strategy_to_ref("s01_trailing_ma", get_strategy("s01_trailing_ma")) == {"spec": "s01_trailing_ma"}


# -- early, clear failures: nothing is started -------------------------------------------------------
class HoldsOpenFile(S01TrailingMA):
    id = "test_holds_open_file"

    def __init__(self, path) -> None:
        self.log = open(path, "w")  # noqa: SIM115 - the point of the test


class HoldsLock(S01TrailingMA):
    id = "test_holds_lock"

    def __init__(self) -> None:
        self.lock = threading.Lock()


def test_unpicklable_strategy_fails_before_workers(small_csv, tmp_path, no_children):
    bad = HoldsOpenFile(tmp_path / "trades.log")
    try:
        with pytest.raises(StrategyError) as err:
            optimize(opt_config(small_csv, bad), quick())
    finally:
        bad.log.close()
    msg = str(err.value)
    assert "cannot be sent to worker processes" in msg
    assert "open them inside run()" in msg and "'package.module:ClassName'" in msg
    with pytest.raises(StrategyError, match=r"cannot be sent to worker processes: TypeError: cannot pickle '_thread.lock'"):
        optimize(opt_config(small_csv, HoldsLock()), quick())


class Raises(S01TrailingMA):
    id = "test_raises_always"

    def run(self, data, params, cache=None):
        raise ZeroDivisionError("my indicator divided by zero")


def test_raising_strategy_fails_early(small_csv, no_children):
    with pytest.raises(StrategyError, match=r"strategy 'test_raises_always' failed on a test backtest.*ZeroDivisionError: my indicator"):
        optimize(opt_config(small_csv, Raises), quick())


def _malformed(kind: str):
    class Malformed(S01TrailingMA):
        id = f"test_malformed_{kind}"

        def run(self, data, params, cache=None):
            out = super().run(data, params, cache)
            assert out.n_trades > 1
            if kind == "not_output":
                return {"trades": []}
            if kind == "exit_before_entry":
                out.exit_idx = out.entry_idx - 1
            elif kind == "length_mismatch":
                out.net_pnl = out.net_pnl[:-1]
            elif kind == "nan_price":
                out.exit_price = out.exit_price.copy()
                out.exit_price[0] = np.nan
            elif kind == "short_curve":
                out.equity = out.equity[:-5]
            elif kind == "float_index":
                out.entry_idx = out.entry_idx.astype(float)
            elif kind == "list_direction":
                out.direction = out.direction.tolist()
            return out

    return Malformed


@pytest.mark.parametrize("kind, message", [
    ("not_output", r"run\(\) returned dict, not a StrategyOutput"),
    ("exit_before_entry", r"0 <= entry_idx <= exit_idx < n_bars"),
    ("length_mismatch", r"trade array 'net_pnl' must be a 1-D array of \d+ values"),
    ("nan_price", r"trade array 'exit_price' has non-finite values"),
    ("short_curve", r"curve 'equity' must be a 1-D array with one value per bar \(3000\)"),
    ("float_index", r"trade array 'entry_idx' must hold integers"),
    ("list_direction", r"malformed StrategyOutput \(AttributeError"),
])
def test_malformed_output_fails_early(small_csv, no_children, kind, message):
    with pytest.raises(StrategyError, match=message) as err:
        optimize(opt_config(small_csv, _malformed(kind)), quick())
    assert f"test_malformed_{kind}" in str(err.value)


class Slow(S01TrailingMA):
    id = "test_too_slow"

    def run(self, data, params, cache=None):
        time.sleep(0.4)
        return super().run(data, params, cache)


class SlowFirstCall(S01TrailingMA):
    """Slow once (like numba compiling on the first call), fast afterwards: not too slow."""

    id = "test_slow_first_call"
    calls = 0

    def run(self, data, params, cache=None):
        type(self).calls += 1
        if type(self).calls == 1:
            time.sleep(0.4)
        return super().run(data, params, cache)


def test_too_slow_strategy_fails_early(small_csv, no_children):
    t0 = time.perf_counter()
    with pytest.raises(StrategyError) as err:
        optimize(opt_config(small_csv, Slow, max_backtest_seconds=0.2), quick())
    assert time.perf_counter() - t0 < 10
    msg = str(err.value)
    assert "strategy 'test_too_slow' is too slow: one backtest of 3000 bars took 0." in msg
    assert "above max_backtest_seconds=0.2" in msg
    assert "OptimizationConfig(..., max_backtest_seconds=" in msg and "None turns the check off" in msg


def test_slow_first_call_only_is_not_too_slow(small_csv):
    SlowFirstCall.calls = 0
    run = optimize(opt_config(small_csv, SlowFirstCall, max_backtest_seconds=0.2, worker_processes=1), quick())
    assert run.summary.completed_trials == 4


@pytest.mark.parametrize("bad", [0, -1, "30", float("nan"), True])
def test_max_backtest_seconds_validated(small_csv, bad, no_children):
    with pytest.raises(ConfigError, match="max_backtest_seconds must be a number of seconds > 0, or None"):
        optimize(opt_config(small_csv, "s01_trailing_ma", max_backtest_seconds=bad), quick())


def test_default_limit_is_documented_value():
    assert OptimizationConfig().max_backtest_seconds == 30.0


# -- the notebook, under papermill with a real kernel --------------------------------------------------
def test_notebook_is_committed_without_outputs():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    source = ["".join(c["source"]) for c in cells]
    assert cells[0]["cell_type"] == "markdown" and "papermill" in source[0]
    tagged = [s for c, s in zip(cells, source) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    for name in ("n_trials", "workers", "start_method", "data_path", "run_dir"):
        assert f"{name} = " in tagged[0]
    for cell in cells:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, "clear the notebook's outputs"


@pytest.mark.slow
@pytest.mark.parametrize("method", ["auto", "spawn", "forkserver"])
def test_notebook_strategy_optimised_with_two_workers(small_csv, tmp_path, method):
    """The strategy class is defined in a notebook cell; 2 workers of ``method`` optimise it (papermill).

    ``auto`` (the default) is forkserver here and spawn on Windows: the summary names the method it resolved to."""
    papermill = pytest.importorskip("papermill")
    if method != "auto" and method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"start method {method!r} is not available on this platform")
    run_dir = tmp_path / "run"
    out = tmp_path / "out.ipynb"
    n_trials = 9
    papermill.execute_notebook(
        str(NOTEBOOK), str(out), kernel_name="python3", cwd=str(tmp_path), progress_bar=False,
        parameters={"n_trials": n_trials, "workers": 2, "start_method": method, "data_path": str(small_csv),
                    "run_dir": str(run_dir)},
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["strategy"] == "ma_cross_atr"
    assert summary["total_trials"] == n_trials
    assert summary["completed_trials"] == n_trials
    assert summary["failed_trials"] == 0
    assert summary["workers"] == 2 and summary["multiprocess_mode"] is True
    resolved = resolve_start_method(method)
    assert summary["start_method"] == resolved
    assert [w["exitcode"] for w in summary["worker_reports"]] == [0, 0]
    assert sum(w["trials"] or 0 for w in summary["worker_reports"]) == n_trials
    results = (run_dir / "results.csv").read_text().splitlines()
    assert len(results) == n_trials + 1

    text = "\n".join(
        "".join(o.get("text", "")) for c in json.loads(out.read_text())["cells"] if c["cell_type"] == "code"
        for o in c.get("outputs", []) if o.get("output_type") == "stream"
    )
    assert f"'start_method': '{resolved}'" in text
    # the notebook's last cell: a strategy using an open notebook file fails before workers start
    assert "StrategyError: strategy <Strategy ma_cross_atr_logging> cannot be sent to worker processes" in text
    assert "open them inside run()" in text


# -- the guide's example ------------------------------------------------------------------------------
def test_guide_example_runs(small_csv):
    """The complete example of docs/custom_strategies.md defines a working, registered strategy."""
    text = (REPO / "docs" / "custom_strategies.md").read_text()
    section = text[text.index("## 5. A complete example"):]
    start = section.index("```python\n") + len("```python\n")
    code = section[start:section.index("\n```", start)]
    assert "class MACrossATR(Strategy)" in code
    namespace: dict = {"__name__": "guide_example"}
    try:
        exec(compile(code, "docs/custom_strategies.md", "exec"), namespace)
        strategy = get_strategy("ma_cross_atr")
        assert type(strategy) is namespace["MACrossATR"]
        data = mk.prepare(mk.load_data(str(small_csv)))
        out = strategy.run(data, strategy.validate_params({}))
        out.check(data.n_bars)
        assert out.n_trades > 5
        assert out.balance[0] == 100.0 and out.balance[-1] == pytest.approx(100.0 + out.net_pnl.sum())
        assert (out.exit_idx >= out.entry_idx).all()
        result = mk.backtest(data, "ma_cross_atr", {"fastLen": 10})
        assert result.metrics["total_trades"] == len(result.trades) > 0
    finally:
        unregister_strategy("ma_cross_atr")
