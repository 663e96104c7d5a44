"""Trust and integrity of studies: what a worker loads from a study it was pointed at.

Whoever can write to a study's storage (a shared journal file, PostgreSQL,
Redis) can write the study's configuration.  Each attack is reproduced from the
outside: a real journal storage, a study crafted by writing its
``merlin.config`` attribute, and ``python -m merlin_kit worker`` as a separate
process, as on another machine.

* (a) a pickled strategy without a valid tag is refused before it is unpickled:
  :func:`test_crafted_pickle_is_refused_before_unpickling`;
* (b) with the run's key the same worker accepts it:
  :func:`test_tagged_pickle_passes_with_the_key_in_the_environment`,
  :func:`test_remote_worker_runs_a_notebook_strategy_with_the_runs_key`;
* (c) ``evil_pkg.mod:Name`` is not imported unless allowed:
  :func:`test_unknown_module_is_not_imported_without_allow_module`;
* (d) secret-looking notebook globals are named in a warning:
  :func:`test_secret_globals_of_a_notebook_strategy_warn`;
* (e) local workers need no flag: :func:`test_local_workers_need_no_flag`.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pickle
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from merlin_kit.errors import ConfigError
from merlin_kit.optimize import OptimizationConfig, OptunaConfig, open_storage, optimize, start_optimization
from merlin_kit.optimize._attrs import CONFIG_ATTR
from merlin_kit.optimize._runconfig import strategy_from_ref, strategy_to_ref
from merlin_kit.optimize._storage import close_storage
from merlin_kit.optimize._trust import (
    ALLOW_MODULES_ENV, TRUST_KEY_ENV, SecretGlobalsWarning, TrustPolicy, looks_secret, sign_pickle, sign_spec,
)
from merlin_kit.strategies import S01TrailingMA, get_strategy

REPO = Path(__file__).resolve().parents[1]
KEY = "0123456789abcdef" * 4
PROC_TIMEOUT = 120

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def small_csv(write_sample_csv) -> Path:
    return write_sample_csv("small.csv", 3000)


@pytest.fixture(autouse=True)
def no_trust_env(monkeypatch):
    """Tests start from a machine with no key and no allowed module; each sets what it needs."""
    monkeypatch.delenv(TRUST_KEY_ENV, raising=False)
    monkeypatch.delenv(ALLOW_MODULES_ENV, raising=False)


# -- helpers: a real study in a journal file, crafted by hand, and the CLI worker -----------------------
def finished_study(tmp_path: Path, csv: Path, name: str = "base") -> str:
    """A journal study left by a finished run (its trial budget is spent): a joining worker stops at once."""
    journal = str(tmp_path / f"{name}.journal")
    optimize(OptimizationConfig(data=str(csv), strategy="s01_trailing_ma", worker_processes=1, warmup_bars=200,
                                optimize_params=["closeCountLong"]),
             OptunaConfig(n_trials=2, sampler="random", seed=1, study_name=name, storage=journal,
                          output_dir=tmp_path / f"{name}-run"))
    return journal


def set_strategy_ref(journal: str, study: str, ref: dict) -> None:
    """What anyone with write access to the storage can do: replace the study's strategy."""
    storage = open_storage(journal, heartbeat=False)
    try:
        sid = storage.get_study_id_from_name(study)
        config = dict(storage.get_study_user_attrs(sid)[CONFIG_ATTR])
        config["strategy_ref"] = ref
        storage.set_study_user_attr(sid, CONFIG_ATTR, config)
    finally:
        close_storage(storage)


def cli_worker(journal: str, study: str, *extra: str, env: dict[str, str] | None = None,
               path: list[Path] = ()) -> subprocess.CompletedProcess:
    """``python -m merlin_kit worker`` in its own process, from another folder (stands in for another machine)."""
    full_env = {k: v for k, v in os.environ.items() if k not in (TRUST_KEY_ENV, ALLOW_MODULES_ENV)}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), *map(str, path)])
    args = [sys.executable, "-m", "merlin_kit", "worker", "--storage", journal, "--study", study,
            "--worker-id", "500", *extra]
    return subprocess.run(args, cwd=Path(journal).parent, env=full_env, capture_output=True, text=True,
                          timeout=PROC_TIMEOUT)


class _RunsCommand:
    """Unpickling this runs a shell command (the crafted payload: ``os.system`` on join)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps(_RunsCommand(f"echo pwned > {shlex.quote(str(marker))}"))


def notebook_class(source: str, name: str) -> type:
    """A class defined as in a notebook cell: module ``__main__``, globals of its own (shipped by value)."""
    namespace: dict = {"__name__": "__main__", "S01TrailingMA": S01TrailingMA}
    exec(compile(source, "<notebook cell>", "exec"), namespace)
    return namespace[name]


PLAIN_CELL = '''
LOOKBACK = 3

class NotebookS01(S01TrailingMA):
    id = "test_notebook_s01"

    def run(self, data, params, cache=None):
        assert LOOKBACK == 3
        return super().run(data, params, cache)
'''

LEAKY_CELL = '''
API_KEY = "sk-fake-0123456789"
DB_PASSWORD = "hunter2-fake"
LOOKBACK = 3

def _connect():
    return DB_PASSWORD

class LeakyS01(S01TrailingMA):
    id = "test_leaky_s01"

    def run(self, data, params, cache=None):
        _ = (API_KEY, _connect(), LOOKBACK)
        return super().run(data, params, cache)
'''


# -- (a) a crafted pickle ----------------------------------------------------------------------------
@pytest.mark.parametrize("forged", ["no tag", "tag of another key"])
def test_crafted_pickle_is_refused_before_unpickling(small_csv, tmp_path, forged):
    journal = finished_study(tmp_path, small_csv)
    marker = tmp_path / "pwned"
    blob = evil_pickle(marker)
    ref = {"pickle": base64.b64encode(blob).decode()}
    env = {}
    if forged != "no tag":
        ref["hmac"] = sign_pickle("attacker-" + KEY, blob)
        env[TRUST_KEY_ENV] = KEY  # the worker holds the real run's key: the forged tag does not match it
    set_strategy_ref(journal, "base", ref)

    proc = cli_worker(journal, "base", env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "this study carries a pickled strategy" in out
    assert "--trust-key" in out and "MERLIN_TRUST_KEY" in out and "'package.module:Name'" in out
    assert ("no trust tag" if forged == "no tag" else "does not match the trust key") in out
    assert "Traceback" not in out
    assert not marker.exists(), "the crafted pickle was unpickled"


def test_refusal_in_process_names_the_field():
    blob = pickle.dumps(_RunsCommand("true"))
    with pytest.raises(ConfigError, match="no trust key was given") as info:
        strategy_from_ref({"pickle": base64.b64encode(blob).decode(), "hmac": sign_pickle(KEY, blob)})
    assert info.value.field == "strategy"


# -- (b) the run's key authorises the pickle -----------------------------------------------------------
def test_tagged_pickle_passes_with_the_key_in_the_environment(small_csv, tmp_path):
    """The same payload, tagged with the key the worker is given: the trust check lets it through (it runs)."""
    journal = finished_study(tmp_path, small_csv)
    marker = tmp_path / "ran"
    blob = evil_pickle(marker)
    set_strategy_ref(journal, "base", {"pickle": base64.b64encode(blob).decode(), "hmac": sign_pickle(KEY, blob)})

    proc = cli_worker(journal, "base", env={TRUST_KEY_ENV: KEY})
    out = proc.stdout + proc.stderr
    assert "refused" not in out and "trust" not in out, out
    assert marker.exists(), "with a valid tag and the key, the strategy is unpickled"
    assert proc.returncode == 2 and "a strategy is an id" in out  # it was no strategy: a clear error after loading


def test_remote_worker_runs_a_notebook_strategy_with_the_runs_key(small_csv, tmp_path, monkeypatch):
    """A notebook strategy, remote workers only: without the key a worker is refused; with it, it runs the study."""
    monkeypatch.setenv(TRUST_KEY_ENV, KEY)  # set on both machines
    journal = str(tmp_path / "study.journal")
    cls = notebook_class(PLAIN_CELL, "NotebookS01")
    run = start_optimization(
        OptimizationConfig(data=str(small_csv), strategy=cls, worker_processes=0, warmup_bars=200,
                           optimize_params=["closeCountLong", "closeCountShort"]),
        OptunaConfig(n_trials=4, sampler="random", seed=3, study_name="nb", storage=journal,
                     output_dir=tmp_path / "run"),
    )
    try:
        assert run.trust_key == KEY
        assert set(run.run_config.strategy_ref) == {"pickle", "hmac"}

        refused = cli_worker(journal, "nb")
        assert refused.returncode == 2, refused.stderr
        assert "no trust key was given to this worker" in refused.stderr
        wrong = cli_worker(journal, "nb", "--trust-key", "x" * 32)
        assert wrong.returncode == 2 and "does not match the trust key" in wrong.stderr

        joined = cli_worker(journal, "nb", env={TRUST_KEY_ENV: KEY})
        assert joined.returncode == 0, joined.stdout + joined.stderr
        assert run.wait(60)
    finally:
        run.stop()
    assert run.summary.completed_trials == 4
    assert KEY.encode() not in Path(journal).read_bytes(), "the key must not be stored in the study"


# -- (c) an import path from a study -------------------------------------------------------------------
EVIL_MODULE = '''
import os
with open(os.environ["EVIL_MARKER"], "w") as f:
    f.write("imported")
from merlin_kit.strategies import S01TrailingMA

class Name(S01TrailingMA):
    id = "evil"
'''


def test_unknown_module_is_not_imported_without_allow_module(small_csv, tmp_path):
    site = tmp_path / "site"
    (site / "evil_pkg").mkdir(parents=True)
    (site / "evil_pkg" / "__init__.py").write_text("")
    (site / "evil_pkg" / "mod.py").write_text(EVIL_MODULE)
    marker = tmp_path / "imported"
    env = {"EVIL_MARKER": str(marker)}
    journal = finished_study(tmp_path, small_csv)
    spec = "evil_pkg.mod:Name"
    set_strategy_ref(journal, "base", {"spec": spec, "hmac": sign_spec("attacker-" + KEY, spec)})

    for extra, more_env in [((), {}), (("--allow-module", "evil"), {}), ((), {TRUST_KEY_ENV: KEY}),
                            (("--allow-module", "other_pkg"), {ALLOW_MODULES_ENV: "evil_pkg.sub"})]:
        proc = cli_worker(journal, "base", *extra, env={**env, **more_env}, path=[site])
        out = proc.stdout + proc.stderr
        assert proc.returncode == 2, (extra, out)
        assert "would import module 'evil_pkg.mod'" in out and "--allow-module evil_pkg" in out, out
        assert "MERLIN_ALLOW_MODULES=evil_pkg" in out
        assert not marker.exists(), f"evil_pkg was imported with {extra} {more_env}"

    allowed = cli_worker(journal, "base", "--allow-module", "evil_pkg", env=env, path=[site])
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert marker.read_text() == "imported"
    marker.unlink()
    by_env = cli_worker(journal, "base", env={**env, ALLOW_MODULES_ENV: "other_pkg, evil_pkg"}, path=[site])
    assert by_env.returncode == 0, by_env.stdout + by_env.stderr
    assert marker.exists()


def test_what_a_worker_imports_without_flags():
    no_flags = TrustPolicy.resolve()
    for spec in ("s01_trailing_ma", "merlin_kit.strategies:S01TrailingMA", "plugin_not_installed"):
        no_flags.check_spec(spec, None)  # built-in ids, the kit's modules and plug-in names need nothing
    with pytest.raises(ConfigError, match="--allow-module tests"):
        no_flags.check_spec("tests._strategies:SlowS01", None)
    TrustPolicy(KEY).check_spec("tests._strategies:SlowS01", sign_spec(KEY, "tests._strategies:SlowS01"))
    TrustPolicy(allow_modules=("tests",)).check_spec("tests._strategies:SlowS01", None)
    with pytest.raises(ConfigError, match="at least 16"):
        TrustPolicy.resolve("short")
    with pytest.raises(ConfigError, match="dotted package name"):
        TrustPolicy.resolve(None, ["evil pkg"])


# -- (d) secrets in notebook globals -------------------------------------------------------------------
def test_secret_globals_of_a_notebook_strategy_warn(small_csv, caplog):
    cls = notebook_class(LEAKY_CELL, "LeakyS01")
    with caplog.at_level(logging.WARNING, logger="merlin_kit.optimize"):
        with pytest.warns(SecretGlobalsWarning) as record:
            ref = strategy_to_ref(cls, get_strategy(cls), KEY)
    message = str([w for w in record if w.category is SecretGlobalsWarning][0].message)
    assert "API_KEY" in message and "DB_PASSWORD" in message  # DB_PASSWORD through the helper _connect()
    assert "LOOKBACK" not in message and "_connect" not in message
    assert "sk-fake" not in message and "hunter2" not in message  # names, never values
    assert "os.environ" in message
    assert any("API_KEY" in r.getMessage() for r in caplog.records)
    assert b"sk-fake-0123456789" in base64.b64decode(ref["pickle"])  # why it warns: the value travels

    with pytest.warns(SecretGlobalsWarning, match="API_KEY"):  # a real run warns as it starts
        run = optimize(OptimizationConfig(data=str(small_csv), strategy=cls, worker_processes=1, warmup_bars=200,
                                          optimize_params=["closeCountLong"]),
                       OptunaConfig(n_trials=2, sampler="random", seed=1))
    assert run.summary.completed_trials == 2

    with warnings.catch_warnings():
        warnings.simplefilter("error", SecretGlobalsWarning)
        strategy_to_ref(notebook_class(PLAIN_CELL, "NotebookS01"), get_strategy(notebook_class(PLAIN_CELL, "NotebookS01")))


def test_secret_looking_names():
    for name in ("API_KEY", "apiKey", "db_password", "SECRET", "auth_token", "AWS_SECRET_ACCESS_KEY", "credentials"):
        assert looks_secret(name), name
    for name in ("capital", "keyboard", "LOOKBACK", "monkey", "tokenizer_len", "np"):
        assert not looks_secret(name), name


# -- (e) the run's own workers -------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["notebook", "tests._strategies:SlowS01"])
def test_local_workers_need_no_flag(small_csv, tmp_path, strategy):
    """Local spawn workers get the run's random key from the parent: a notebook class or a test module just works."""
    spec = notebook_class(PLAIN_CELL, "NotebookS01") if strategy == "notebook" else strategy
    journal = tmp_path / "study.journal"
    run = optimize(
        OptimizationConfig(data=str(small_csv), strategy=spec, worker_processes=2, start_method="spawn",
                           warmup_bars=200, optimize_params=["closeCountLong", "closeCountShort"]),
        OptunaConfig(n_trials=4, sampler="random", seed=2, storage=str(journal), output_dir=tmp_path / "run"),
    )
    assert run.summary.completed_trials == 4
    assert [w.exitcode for w in run.summary.worker_reports] == [0, 0]
    assert "hmac" in run.run_config.strategy_ref
    assert len(run.trust_key) == 64  # random per run: nobody needs to know it
    assert run.trust_key.encode() not in journal.read_bytes()
    assert run.trust_key not in (tmp_path / "run" / "summary.json").read_text()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["failed_trials"] == 0
