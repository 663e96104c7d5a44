"""A trial's parameters go to the journal as one batch: the same entries Optuna writes, one append, seen at once.

Real journal files, real Optuna storages, a real optimisation run (no mock of a storage).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from merlin_kit.optimize import OptimizationConfig, OptunaConfig, optimize
from merlin_kit.optimize import _worker
from merlin_kit.optimize._batched_storage import BatchedJournalStorage
from merlin_kit.optimize._storage import open_storage

DISTS = {"a": FloatDistribution(0.0, 1.0), "b": IntDistribution(1, 9, step=2),
         "c": CategoricalDistribution(["x", "y", 3])}
VALUES = {"a": 0.25, "b": 5, "c": "y"}


def write_params(storage, path: Path, batched: bool) -> list[dict]:
    study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "s")
    trial_id = storage.create_new_trial(study_id)
    with storage.batch() if batched else _nothing():
        for name, dist in DISTS.items():
            storage.set_trial_param(trial_id, name, dist.to_internal_repr(VALUES[name]), dist)
    return [json.loads(line) for line in path.read_text().splitlines()]


class _nothing:
    def __enter__(self) -> None: ...

    def __exit__(self, *exc: object) -> None: ...


def test_a_batch_writes_the_entries_optuna_writes_in_one_append(tmp_path):
    plain_path, batched_path = tmp_path / "plain.log", tmp_path / "batched.log"
    plain = JournalStorage(JournalFileBackend(str(plain_path)))
    batched = open_storage(str(batched_path))
    assert isinstance(batched, BatchedJournalStorage)
    appends: list[int] = []
    real_append = batched._backend.append_logs
    batched._backend.append_logs = lambda logs: (appends.append(len(logs)), real_append(logs))[1]
    expected, written = write_params(plain, plain_path, False), write_params(batched, batched_path, True)

    def without_worker(entries: list[dict]) -> list[dict]:  # and without the trial's start time
        return [{k: v for k, v in e.items() if k not in ("worker_id", "datetime_start")} for e in entries]

    assert without_worker(written) == without_worker(expected)
    assert {e["worker_id"] for e in written} == {batched._replay_result.worker_id}
    assert appends == [1, 1, len(DISTS)], "study, trial, then every parameter in one append"
    trial = batched.get_all_trials(0)[0]
    assert trial.params == VALUES and trial.distributions == DISTS


def test_parameters_are_seen_by_other_processes_when_the_batch_ends_not_before(tmp_path):
    path = tmp_path / "j.log"
    storage = open_storage(str(path))
    study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "s")
    trial_id = storage.create_new_trial(study_id)

    def other_view() -> dict:  # what another worker reads: its own storage on the same file
        return JournalStorage(JournalFileBackend(str(path))).get_all_trials(study_id)[0].params

    with storage.batch():
        for name, dist in DISTS.items():
            storage.set_trial_param(trial_id, name, dist.to_internal_repr(VALUES[name]), dist)
        assert other_view() == {}
        assert storage.get_trial(trial_id).state == TrialState.RUNNING
    assert other_view() == VALUES, "a running trial's parameters are visible (constant liar) once suggested"


def test_entries_of_a_batch_that_raises_are_written_and_other_threads_are_not_held(tmp_path):
    path = tmp_path / "j.log"
    storage = open_storage(str(path))
    study_id = storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], "s")
    trial_id = storage.create_new_trial(study_id)
    other_trial = storage.create_new_trial(study_id)
    seen_by_other: list[dict] = []
    with pytest.raises(RuntimeError, match="after a"):
        with storage.batch():
            storage.set_trial_param(trial_id, "a", 0.25, DISTS["a"])
            # another thread of the same process (the panel's monitor, a thread worker) writes at once
            t = threading.Thread(target=lambda: storage.set_trial_param(other_trial, "b", 5, DISTS["b"]))
            t.start()
            t.join()
            seen_by_other.append(JournalStorage(JournalFileBackend(str(path))).get_trial(other_trial).params)
            raise RuntimeError("after a")
    assert seen_by_other == [{"b": 5}]
    assert storage.get_trial(trial_id).params == {"a": 0.25}


def test_a_run_finds_the_same_trials_with_and_without_the_batch(tmp_path, monkeypatch, write_sample_csv):
    csv = write_sample_csv("batched.csv", 3000)

    def run(name: str) -> list[tuple]:
        opt = OptimizationConfig(data=str(csv), worker_processes=1, warmup_bars=200,
                                 optimize_params=["maType", "maLength", "closeCountLong", "stopLongX"])
        cfg = OptunaConfig(n_trials=25, seed=7, save_study=True, output_dir=str(tmp_path / name))
        done = optimize(opt, cfg)
        return [(t.params, t.values, t.state) for t in done.study.get_trials(deepcopy=False)]

    batched = run("batched")
    monkeypatch.setattr(_worker, "params_batch", lambda storage: _nothing())
    assert run("plain") == batched
