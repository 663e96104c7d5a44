"""Which Optuna sampler a run uses: names, options, and how each one is built per worker.

:func:`check_sampler` validates a sampler name and its options before any
worker starts (unknown option, wrong type, a sampler that cannot do what the run
asks, a package that is not installed: a :class:`ConfigError` naming what is
allowed); :func:`make_sampler` builds the sampler in each worker from the run's
stored config.

Seeds and several processes.  Every worker builds its own sampler on one shared
study, so what "the seed" means depends on the sampler:

* ``tpe``, ``random``, ``gp``: worker ``k`` uses ``seed + k``; the same seed in
  every worker would draw the same candidates (duplicates).  TPE keeps
  ``constant_liar`` on so that running trials repel new ones.
* ``cmaes``: ``seed + k``.  Optuna keeps the CMA state in each trial's system
  attrs and every worker restores the newest generation from the storage, so the
  workers share one search; different seeds make them draw different members of
  the same generation instead of the same one twice.
* ``nsga2``/``nsga3``: ``seed + k``.  Generations are numbered in trial system
  attrs and a worker breeds children of the current generation's parents read
  from the storage; distinct seeds give distinct children.
* ``qmc``: ONE low-discrepancy sequence for the whole run.  Every worker uses the
  same seed (``seed``, or one derived from the run id when no seed is set, so
  scrambled sequences agree), and the point of a trial is chosen by its trial
  number, unique across processes and machines.  Optuna's own QMCSampler takes
  the next index from a study attribute with a read-then-write that two
  processes can interleave (the same point twice); :class:`_TrialNumberQMC`
  replaces that counter with the trial number.  A resumed study continues the
  sequence (a scrambled one only with a seed: without one the scramble follows the run id).

Exact budgets come from the kit's trial queue (:mod:`._budget`): a worker claims
a queued trial and the sampler fills in its parameters (ask/tell), whatever
the sampler.
"""

from __future__ import annotations

import importlib.util
import warnings
import zlib
from typing import TYPE_CHECKING, Any, Callable, Mapping

import optuna
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial

from ..errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from ._runconfig import RunConfig


#: the samplers this module builds ("grid" is the sweep path's own)
SAMPLER_NAMES = ("tpe", "random", "cmaes", "nsga2", "nsga3", "qmc", "gp")
#: samplers that optimise one objective only
SINGLE_OBJECTIVE = frozenset({"cmaes"})
#: samplers whose Optuna class takes ``constraints_func``
CONSTRAINED = ("tpe", "nsga2", "nsga3", "gp")
#: adaptive samplers that cannot read constraints: they would steer towards infeasible parameters
IGNORES_CONSTRAINTS = frozenset({"cmaes"})
#: sampler -> (python modules it needs, the extra that installs them)
NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "cmaes": (("cmaes",), "samplers"),
    "qmc": (("scipy",), "samplers"),
    "gp": (("torch", "scipy"), "gp"),
}
_CROSSOVERS = ("uniform", "blxalpha", "sbx", "vsbx", "undx", "spx")
_GA_OPTIONS: dict[str, tuple[str, Any]] = {
    "population_size": ("int>=2", 50), "mutation_prob": ("prob", None), "crossover": (_CROSSOVERS, "uniform"),
    "crossover_prob": ("prob", 0.9), "swapping_prob": ("prob", 0.5),
}
#: sampler -> option -> (kind, default); kind: "bool", "int>=N", "float>0", "prob" or a tuple of choices
OPTIONS: dict[str, dict[str, tuple[str | tuple[str, ...], Any]]] = {
    "tpe": {"multivariate": ("bool", True), "group": ("bool", False), "constant_liar": ("bool", True),
            "n_ei_candidates": ("int>=1", 24), "consider_endpoints": ("bool", False),
            "prior_weight": ("float>0", 1.0)},
    "random": {},
    "cmaes": {"popsize": ("int>=2", None), "sigma0": ("float>0", None), "use_separable_cma": ("bool", False),
              "with_margin": ("bool", False), "lr_adapt": ("bool", False), "consider_pruned_trials": ("bool", False)},
    "nsga2": dict(_GA_OPTIONS),
    "nsga3": {**_GA_OPTIONS, "dividing_parameter": ("int>=1", 3)},
    "qmc": {"qmc_type": (("sobol", "halton"), "sobol"), "scramble": ("bool", False)},
    "gp": {"deterministic_objective": ("bool", True)},
}


def _which(pred: Callable[[str], bool]) -> str:
    return ", ".join(n for n in SAMPLER_NAMES if pred(n))


def _coerce(sampler: str, key: str, kind: str | tuple[str, ...], value: Any) -> Any:
    """``value`` checked (and a CLI string converted) against ``kind``; ConfigError naming the option otherwise."""
    def bad(expected: str) -> ConfigError:
        reason = f"option {key!r} of sampler {sampler!r} must be {expected}, got {value!r}"
        return ConfigError(f"sampler_options: {reason}", field="sampler_options", param=key, reason=reason)

    if isinstance(kind, tuple):
        if value not in kind:
            raise bad(f"one of {', '.join(kind)}")
        return value
    if kind == "bool":
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if isinstance(value, str):
        try:
            value = float(value) if kind != "int" and not kind.startswith("int") else int(value)
        except ValueError:
            raise bad("a number") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise bad("a number")
    if kind.startswith("int>="):
        low = int(kind[5:])
        if not float(value).is_integer() or value < low:
            raise bad(f"an integer >= {low}")
        return int(value)
    if kind == "prob":
        if not 0.0 <= value <= 1.0:
            raise bad("a probability in [0, 1]")
        return float(value)
    if not value > 0:  # float>0
        raise bad("a number > 0")
    return float(value)


def check_sampler(name: str, options: Mapping[str, Any], *, n_objectives: int, constrained: bool) -> dict:
    """Validate ``name`` and its ``options`` for a run; return the options normalised (typed, defaults filled).

    Raises ConfigError (``field`` "sampler" or "sampler_options") for an unknown
    sampler or option, a wrong type, a sampler that cannot handle several
    objectives or constraints (the message names those that can), or a missing
    package (the message names the extra that installs it).
    """
    if name not in OPTIONS:
        raise ConfigError(f"sampler must be one of {', '.join(SAMPLER_NAMES)}, got {name!r}", field="sampler")
    if n_objectives > 1 and name in SINGLE_OBJECTIVE:
        raise ConfigError(f"sampler {name!r} optimises one objective only; with {n_objectives} objectives use "
                          f"one of {_which(lambda n: n not in SINGLE_OBJECTIVE)}", field="sampler")
    if constrained and name in IGNORES_CONSTRAINTS:
        raise ConfigError(f"sampler {name!r} cannot take constraints into account and would steer towards "
                          f"infeasible parameters; with constraints use one of {', '.join(CONSTRAINED)} (or random "
                          "or qmc, which draw regardless; the constraints then sort their results)", field="sampler")
    if not isinstance(options, Mapping):
        raise ConfigError(f"sampler_options must be a dict of option -> value, got {options!r}",
                          field="sampler_options")
    allowed = OPTIONS[name]
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key not in allowed:
            hint = (" (set it with n_startup_trials / --startup-trials)" if key == "n_startup_trials" else "")
            names = ", ".join(allowed) or "none"
            reason = f"unknown option {key!r} for sampler {name!r}{hint}; allowed: {names}"
            raise ConfigError(f"sampler_options: {reason}", field="sampler_options", param=key, reason=reason)
        out[key] = _coerce(name, key, allowed[key][0], value)
    if name == "cmaes" and sum(bool(out.get(k)) for k in ("use_separable_cma", "with_margin", "lr_adapt")) > 1:
        reason = "use_separable_cma, with_margin and lr_adapt exclude each other: choose one"
        raise ConfigError(f"sampler_options: {reason}", field="sampler_options", reason=reason)
    parents = {"undx": 3, "spx": 3}.get(out.get("crossover", ""), 2)
    if name in ("nsga2", "nsga3") and out.get("population_size", 50) < parents:
        reason = f"population_size must be >= {parents} for crossover {out['crossover']!r}"
        raise ConfigError(f"sampler_options: {reason}", field="sampler_options", param="population_size",
                          reason=reason)
    if name == "tpe" and out.get("group") and not out.get("multivariate", True):
        reason = "group=true needs multivariate=true"
        raise ConfigError(f"sampler_options: {reason}", field="sampler_options", param="group", reason=reason)
    modules, extra = NEEDS.get(name, ((), ""))
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(f"sampler {name!r} needs the package(s) {', '.join(missing)}: "
                          f'pip install "merlin-kit[{extra}]"', field="sampler")
    return out


class _TrialNumberQMC(optuna.samplers.QMCSampler):
    """QMCSampler whose point index is the trial number (unique across processes), not a shared counter."""

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial,
                        search_space: dict[str, optuna.distributions.BaseDistribution]) -> dict[str, Any]:
        self._trial_number = trial.number
        return super().sample_relative(study, trial, search_space)

    def _find_sample_id(self, study: optuna.Study, search_space: Any) -> int:
        return self._trial_number


def _one_torch_thread_in_a_pool() -> None:
    """In a worker process of a pool (a multiprocessing child: ours, or a Dask worker's), torch gets one thread.

    torch uses every core by default: N workers then run N x cores threads, and two GP workers on two
    cores were slower than one (1.0 vs 2.2 trials/s).  A lone worker (in-process, or ``merlin-kit
    worker --workers 1``) keeps torch's default.
    """
    import multiprocessing

    if multiprocessing.parent_process() is not None:
        import torch

        torch.set_num_threads(1)


def _crossover(name: str) -> Any:
    c = optuna.samplers.nsgaii
    return {"uniform": c.UniformCrossover, "blxalpha": c.BLXAlphaCrossover, "sbx": c.SBXCrossover,
            "vsbx": c.VSBXCrossover, "undx": c.UNDXCrossover, "spx": c.SPXCrossover}[name]()


def make_sampler(cfg: "RunConfig", worker_id: int) -> BaseSampler:
    """The run's sampler in worker ``worker_id`` (seeding per sampler: see the module docstring).

    Constraints need no ``constraints_func`` (deprecated in Optuna 5): the worker records each trial's
    violations with ``trial.set_constraint``, which TPE, NSGA-II/III, GP and ``study.best_trials`` read.
    Optuna calls NSGA-III, QMC and GP "experimental"; the user chose them, so that warning is not repeated
    by every worker.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _build(cfg, worker_id)


def _build(cfg: "RunConfig", worker_id: int) -> BaseSampler:
    o = cfg.optuna
    name = o.sampler
    seed = None if o.seed is None else o.seed + worker_id
    if name == "grid" or o.sweep:  # a sweep draws its own points (._sweep); the study only needs some sampler
        return optuna.samplers.RandomSampler(seed=seed)
    # validated with the run's objectives before any worker started; here it only normalises the options
    opts = check_sampler(name, o.sampler_options or {}, n_objectives=1, constrained=False)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=o.n_startup_trials,
                                            warn_independent_sampling=False, **opts)
    if name in ("nsga2", "nsga3"):
        cls = optuna.samplers.NSGAIISampler if name == "nsga2" else optuna.samplers.NSGAIIISampler
        ga = {**opts, "crossover": _crossover(opts.get("crossover", "uniform"))}
        return cls(seed=seed, **ga)
    if name == "qmc":
        shared = o.seed if o.seed is not None else zlib.crc32(cfg.run_id.encode())
        # the first trials (before any has finished) are drawn by the independent sampler: per-worker seed
        return _TrialNumberQMC(seed=shared, independent_sampler=optuna.samplers.RandomSampler(seed=seed),
                               warn_independent_sampling=False, warn_asynchronous_seeding=False, **opts)
    if name == "gp":
        _one_torch_thread_in_a_pool()
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=o.n_startup_trials,
                                         **{"deterministic_objective": True, **opts})
    tpe = {"multivariate": True, "constant_liar": True, **opts}
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=o.n_startup_trials,
                                      **tpe)
