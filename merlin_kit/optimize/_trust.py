"""Which strategies a worker may load from a study: the trust model.

Anyone who can write to a study's storage can write its configuration, so a
worker treats the ``strategy_ref`` it reads there as untrusted input:

* a pickled strategy (a notebook-defined class travels by value) is unpickled
  only when it carries an HMAC-SHA256 tag made with the run's *trust key*, and
  the worker was given that key; the study stores the tag, never the key;
* an import path ``"package.module:Name"`` is imported only when the module is
  the kit's own, the module of an installed plug-in (entry point group
  ``merlin_kit.strategies``), allowed by the worker's user (``--allow-module`` /
  ``MERLIN_ALLOW_MODULES``), or tagged with the trust key (the run's own spec,
  which is how the run's local workers accept it without flags).

Both checks happen before anything is unpickled or imported.  The run's key is
``MERLIN_TRUST_KEY`` when set, otherwise a random key made per run and handed to
the run's own worker processes in their process arguments.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import sys
import types
import warnings
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

from ..errors import ConfigError
from ..strategies import ENTRY_POINT_GROUP

log = logging.getLogger("merlin_kit.optimize")

#: the trust key shared by the machine that starts a run and the machines whose workers join it
TRUST_KEY_ENV = "MERLIN_TRUST_KEY"
#: comma-separated packages whose modules a worker may import for a study's "package.module:Name"
ALLOW_MODULES_ENV = "MERLIN_ALLOW_MODULES"
#: a key given by a person must be at least this long (a generated one is 64 hex digits)
MIN_KEY_LENGTH = 16
#: modules that are always importable: the kit itself
BUILTIN_PACKAGES = ("merlin_kit",)

_PICKLE_DOMAIN = b"merlin_kit strategy pickle\0"
_SPEC_DOMAIN = b"merlin_kit strategy spec\0"
_MAKE_KEY = 'python -c "import secrets; print(secrets.token_hex(32))"'


class SecretGlobalsWarning(UserWarning):
    """A pickled strategy carries module globals whose names look like secrets."""


# -- the key --------------------------------------------------------------------------------------
def checked_key(key: str | None, what: str) -> str | None:
    """``key`` stripped; None when empty; ConfigError when too short to be a secret."""
    if key is None:
        return None
    if not isinstance(key, str):
        raise ConfigError(f"{what} must be a string, got {type(key).__name__}")
    key = key.strip()
    if not key:
        return None
    if len(key) < MIN_KEY_LENGTH:
        raise ConfigError(
            f"{what} is {len(key)} characters long; a trust key needs at least {MIN_KEY_LENGTH} "
            f"(make one with {_MAKE_KEY})"
        )
    return key


def run_trust_key() -> str:
    """The key of a new run: ``MERLIN_TRUST_KEY`` when set, otherwise a random one (never stored anywhere)."""
    return checked_key(os.environ.get(TRUST_KEY_ENV), TRUST_KEY_ENV) or secrets.token_bytes(32).hex()


def _tag(key: str, domain: bytes, payload: bytes) -> str:
    return hmac.new(key.encode("utf-8"), domain + payload, hashlib.sha256).hexdigest()


def sign_pickle(key: str, blob: bytes) -> str:
    """HMAC-SHA256 (hex) of a pickled strategy's bytes."""
    return _tag(key, _PICKLE_DOMAIN, blob)


def sign_spec(key: str, spec: str) -> str:
    """HMAC-SHA256 (hex) of a strategy spec string."""
    return _tag(key, _SPEC_DOMAIN, spec.encode("utf-8"))


def _matches(tag: Any, expected: str) -> bool:
    return isinstance(tag, str) and hmac.compare_digest(tag.encode("ascii", "replace"), expected.encode("ascii"))


# -- what a worker accepts ------------------------------------------------------------------------
def _module_allowed(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def plugin_modules() -> list[str]:
    """Modules of the installed strategy plug-ins (read from their metadata; nothing is imported)."""
    from importlib.metadata import entry_points

    try:
        eps = entry_points(group=ENTRY_POINT_GROUP)
    except Exception as exc:  # a broken distribution's metadata: no plug-in is trusted, say why
        log.warning("could not read the %r entry points: %s", ENTRY_POINT_GROUP, exc)
        return []
    return [ep.value.partition(":")[0].strip() for ep in eps]


def plugin_names() -> set[str]:
    from importlib.metadata import entry_points

    try:
        return {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    except Exception as exc:  # as in plugin_modules
        log.warning("could not read the %r entry points: %s", ENTRY_POINT_GROUP, exc)
        return set()


@dataclass(frozen=True)
class TrustPolicy:
    """What one worker accepts from a study: the run's trust key (if given) and the modules its user allows."""

    key: str | None = None
    allow_modules: tuple[str, ...] = ()

    @classmethod
    def resolve(cls, trust_key: str | None = None, allow_modules: Iterable[str] = ()) -> "TrustPolicy":
        """The worker's policy: arguments first, then ``MERLIN_TRUST_KEY`` / plus ``MERLIN_ALLOW_MODULES``."""
        key = checked_key(trust_key, "--trust-key") or checked_key(os.environ.get(TRUST_KEY_ENV), TRUST_KEY_ENV)
        given = [("--allow-module", m.strip()) for m in allow_modules or ()]
        given += [(ALLOW_MODULES_ENV, m.strip()) for m in os.environ.get(ALLOW_MODULES_ENV, "").split(",")]
        for where, m in given:
            if m and not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", m):
                raise ConfigError(f"{where} {m!r} is not a dotted package name like 'my_strategies'")
        return cls(key, tuple(dict.fromkeys(m for _, m in given if m)))

    def check_pickle(self, blob: bytes, tag: Any) -> None:
        """Raise ConfigError unless ``tag`` is the HMAC of ``blob`` under this worker's key (before unpickling)."""
        fix = ("pass the run's trust key with --trust-key or MERLIN_TRUST_KEY, or use an importable strategy "
               "'package.module:Name'")
        if tag is None:
            problem = "it has no trust tag (it was not written by a merlin_kit run that holds a trust key)"
        elif self.key is None:
            problem = "no trust key was given to this worker"
        elif not _matches(tag, sign_pickle(self.key, blob)):
            problem = "its trust tag does not match the trust key given (another run's key, or the study was altered)"
        else:
            return
        reason = f"this study carries a pickled strategy, refused because {problem}; {fix}"
        raise ConfigError(reason, field="strategy", reason=reason)

    def check_spec(self, spec: str, tag: Any) -> None:
        """Raise ConfigError unless importing ``spec`` (``"package.module:Name"``) is allowed (before importing)."""
        if ":" not in spec or spec in plugin_names():
            return  # an id or a plug-in name: resolved among built-ins and installed plug-ins, nothing else imported
        module = spec.partition(":")[0].strip()
        if _module_allowed(module, BUILTIN_PACKAGES + self.allow_modules + tuple(plugin_modules())):
            return
        if self.key is not None and _matches(tag, sign_spec(self.key, spec)):
            return
        top = module.split(".")[0] or module
        reason = (
            f"this study's strategy {spec!r} would import module {module!r}, which is neither merlin_kit's, "
            f"an installed plug-in's nor allowed on this worker; if you trust it, pass --allow-module {top} "
            f"(or set MERLIN_ALLOW_MODULES={top}), or pass the run's trust key with --trust-key or MERLIN_TRUST_KEY"
        )
        raise ConfigError(reason, field="strategy", reason=reason)


# -- secrets a pickled strategy would carry ---------------------------------------------------------
_SECRET_WORDS = {"key", "keys", "apikey", "api", "secret", "secrets", "token", "tokens", "pwd", "passwd",
                 "password", "passwords", "passphrase", "credential", "credentials", "auth"}


def looks_secret(name: str) -> bool:
    """Whether a global's name looks like it holds a secret (``API_KEY``, ``dbPassword``, ``token``...)."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower().split("_")
    return any(w in _SECRET_WORDS or w.startswith(("passw", "credential", "secret")) for w in words)


def _by_value(obj: Any) -> bool:
    """Whether cloudpickle ships ``obj`` (a class or function) by value, with the globals its code uses."""
    module = getattr(obj, "__module__", None)
    if module is None or module == "__main__" or module not in sys.modules:
        return True
    import cloudpickle

    registry = getattr(cloudpickle, "list_registry_pickle_by_value", None)
    return registry is not None and module in registry()


def _code_names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_names(const)


def _functions(obj: Any) -> Iterator[types.FunctionType]:
    """The functions defined on a class (methods, static/class methods, properties) or the function itself."""
    if isinstance(obj, types.FunctionType):
        yield obj
        return
    for value in vars(obj).values():
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if isinstance(value, property):
            yield from (f for f in (value.fget, value.fset, value.fdel) if isinstance(f, types.FunctionType))
        elif isinstance(value, types.FunctionType):
            yield value


def secret_globals(strategy: Any) -> list[str]:
    """Names of the module globals, looking like secrets, that pickling ``strategy`` would carry."""
    found: set[str] = set()
    seen: set[int] = set()
    todo: list[Any] = list(type(strategy).__mro__)
    todo += [v for v in getattr(strategy, "__dict__", {}).values() if isinstance(v, types.FunctionType)]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or not (isinstance(obj, types.FunctionType) or isinstance(obj, type)) or not _by_value(obj):
            continue
        seen.add(id(obj))
        for func in _functions(obj):
            for name in _code_names(func.__code__):
                if name not in func.__globals__:
                    continue
                value = func.__globals__[name]
                if isinstance(value, (types.FunctionType, type)):
                    todo.append(value)  # a notebook helper travels by value too, with its own globals
                elif not isinstance(value, types.ModuleType) and looks_secret(name):
                    found.add(name)
    return sorted(found)


def warn_secret_globals(strategy: Any) -> None:
    """Warn (and log) when a pickled strategy would carry globals named like secrets into the study."""
    names = secret_globals(strategy)
    if not names:
        return
    listed = ", ".join(names)
    message = (
        f"strategy {strategy!r} is sent to workers pickled by value together with the notebook globals its code "
        f"uses, including {listed}, whose name looks like a secret: the value is stored in the study, readable "
        f"by anyone who can read the storage or its dashboard. Read secrets inside run() (e.g. "
        f"os.environ[...]) instead of from notebook globals, or move the strategy to an importable module."
    )
    log.warning(message)
    warnings.warn(message, SecretGlobalsWarning, stacklevel=4)
