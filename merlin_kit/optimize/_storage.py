"""Storage locations -> Optuna storages, shared by the parent and every worker.

A *location* is one string that a worker on any machine can open: a journal
file path (the default, one machine), ``journal+open:///path`` (the same with
``JournalFileOpenLock``, what Windows and NFS need), ``redis://...`` (Optuna's
journal on Redis; ``?prefix=NAME`` keeps a project's keys apart), or an RDB URL
(``postgresql://``, ``mysql://``, ``sqlite:///`` for one worker).
:class:`StorageLocation` parses it once; everything that needs to know what
kind of storage a run uses, where its journal file is, or how to show it
without its password, asks that object.

Drivers are optional extras (``merlin-kit[postgres]``, ``[mysql]``,
``[redis]``); a missing one is a :class:`ConfigError` naming the extra.
Servers are probed when opened, with short timeouts, so a wrong password or an
unreachable server is an error within seconds.  A worker's running trial sends
a heartbeat (see :mod:`merlin_kit.optimize._liveness`) so that a trial whose
worker died on another machine is marked FAIL instead of staying RUNNING.
"""

from __future__ import annotations

import os
import re
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import optuna
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import JournalFileOpenLock, JournalFileSymlinkLock, JournalRedisBackend

from .._platform import is_windows
from ..errors import ConfigError, OptimizationError
from ._batched_storage import BatchedJournalStorage
from ._journal import FlushedJournalFileBackend


#: seconds after which a lock held by a dead process is broken (Optuna's default is 30)
LOCK_GRACE_SECONDS = 3
OPEN_LOCK_SCHEME = "journal+open://"
RDB_SCHEMES = ("postgresql", "postgres", "mysql", "sqlite")
REDIS_SCHEMES = ("redis", "rediss", "unix")
#: file name of the study journal in a run folder
JOURNAL_NAME = "study.journal"
#: heartbeat of a running trial: a worker silent for HEARTBEAT_GRACE seconds has its RUNNING trial marked
#: FAIL (RDB: Optuna's heartbeat table; journals: a trial user attr).  Environment overrides:
#: MERLIN_HEARTBEAT_INTERVAL, MERLIN_HEARTBEAT_GRACE.
HEARTBEAT_INTERVAL = 5
HEARTBEAT_GRACE = 20
#: seconds to connect (and, for the start-up probe, to get the server's first answer)
CONNECT_TIMEOUT = 5


def symlinks_supported(directory: str) -> bool:
    """Whether the journal's default symlink lock works in ``directory`` (not on some Windows/NFS setups)."""
    probe = os.path.join(directory, f".merlin-symlink-probe-{os.getpid()}-{threading.get_ident()}")
    try:
        os.symlink(probe + ".target", probe)
    except (OSError, NotImplementedError):  # Windows without the privilege: WinError 1314
        return False
    try:
        os.unlink(probe)
    except OSError:
        pass
    return True


def default_lock(directory: str) -> str:
    """The lock of a journal given as a plain path: ``open`` on Windows and where symlinks fail, else ``symlink``.

    Every process of a run decides the same way for the same folder (the
    decision depends only on the platform and the folder), so they exclude each other.
    """
    return "open" if is_windows() or not symlinks_supported(directory) else "symlink"


def journal_location(path: str | os.PathLike, lock: str = "auto") -> str:
    """Location string of a journal file; ``lock`` is ``symlink``, ``open`` or ``auto``."""
    path = os.path.abspath(os.fspath(path))
    if lock not in ("auto", "symlink", "open"):
        raise ConfigError(f"journal lock must be auto, symlink or open, got {lock!r}")
    if lock == "open" or (lock == "auto" and default_lock(os.path.dirname(path) or ".") == "open"):
        return OPEN_LOCK_SCHEME + path
    return path


StorageKind = Literal["journal", "redis", "rdb"]


def kind_of(location: str) -> StorageKind:
    """``journal``, ``redis`` or ``rdb``; an unknown ``scheme://`` is a :class:`ConfigError`.

    A location without ``://`` is a journal file path (``C:\\runs\\study.journal`` included).
    """
    if location.startswith(OPEN_LOCK_SCHEME) or "://" not in location:
        return "journal"
    scheme = location.split("://", 1)[0].lower()
    base = scheme.split("+")[0]
    if base in REDIS_SCHEMES:
        return "redis"
    if base in RDB_SCHEMES:
        return "rdb"
    raise ConfigError(
        f"storage {redact(location)}: unknown scheme {scheme + '://'!r}; use a journal file path, "
        f"journal+open:///PATH, postgresql://, mysql://, sqlite:///, redis:// or rediss://", field="storage"
    )


#: ``journal+open:///C:/runs/x.journal`` (the URL form of a drive path): the slash before the drive is not a folder
_DRIVE_AFTER_SLASH = re.compile(r"^[/\\][A-Za-z]:[/\\]")


def journal_path(location: str) -> str | None:
    """The journal file of a journal location (None for servers); never URL-parsed, so any character is fine.

    ``journal+open://PATH``, ``journal+open:///C:/PATH`` and ``journal+open://C:\\PATH`` all name PATH.
    """
    if kind_of(location) != "journal":
        return None
    if not location.startswith(OPEN_LOCK_SCHEME):
        return location
    path = location[len(OPEN_LOCK_SCHEME):]
    return path[1:] if _DRIVE_AFTER_SLASH.match(path) else path


@dataclass(frozen=True)
class StorageLocation:
    """A study's storage, parsed once: what it is, how to open it, how to show it.

    ``url`` is the string a worker receives (journal path, ``journal+open://``
    path or server URL); ``display`` is the same with any password masked, for
    logs, summaries and messages; ``dashboard_target`` is what optuna-dashboard
    opens (the journal file itself, or the server URL).
    """

    url: str
    kind: StorageKind
    path: str | None = None

    @classmethod
    def parse(cls, location: "str | os.PathLike[str] | StorageLocation") -> "StorageLocation":
        if isinstance(location, StorageLocation):
            return location
        url = os.fspath(location)
        kind = kind_of(url)
        return cls(url, kind, journal_path(url) if kind == "journal" else None)

    @classmethod
    def journal(cls, path: "str | os.PathLike[str]", lock: str = "auto") -> "StorageLocation":
        """A journal file; ``lock`` is ``symlink``, ``open`` or ``auto`` (probe the folder)."""
        return cls.parse(journal_location(path, lock))

    @property
    def lock(self) -> str | None:
        """``open`` or ``symlink`` for a journal, None for a server."""
        if self.kind != "journal":
            return None
        if self.url.startswith(OPEN_LOCK_SCHEME):
            return "open"
        assert self.path is not None
        return default_lock(os.path.dirname(self.path) or ".")

    @property
    def display(self) -> str:
        return redact(self.url)

    @property
    def dashboard_target(self) -> str:
        """The journal file, or the server URL (databases: with the installed driver named)."""
        if self.path is not None:
            return self.path
        return rdb_url(self.url) if self.kind == "rdb" else self.url

    def open(self, *, heartbeat: bool = True, create: bool = True) -> BaseStorage:
        """The Optuna storage; ``create=False``: a missing journal file is a :class:`ConfigError`."""
        return open_storage(self.url, heartbeat=heartbeat, create=create)

    def sync(self) -> None:
        """fsync a journal file once, so a finished run survives a power loss (servers: nothing to do)."""
        if self.path is not None and os.path.exists(self.path):
            with open(self.path, "ab") as fh:
                os.fsync(fh.fileno())

    def in_folder(self, folder: "str | os.PathLike[str]") -> bool:
        """Whether this is a journal file directly inside ``folder``."""
        return self.path is not None and Path(self.path).parent == Path(folder)

    def __str__(self) -> str:
        return self.display


def redact(location: str) -> str:
    """Location with any password replaced, for logs, summaries and error messages."""
    if "://" not in location or location.startswith(OPEN_LOCK_SCHEME):
        return location  # a journal path has no password (and a path with [ or ] must not reach urlsplit)
    try:
        parts = urlsplit(location)
    except ValueError:  # not a URL urlsplit can read: hide everything between :// and @
        head, _, rest = location.partition("://")
        return f"{head}://***@{rest.rsplit('@', 1)[1]}" if "@" in rest else location
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return location.replace(parts.netloc, netloc)
    return location


def _scrub(text: str, location: str) -> str:
    """An error message with the location's password hidden, should a driver have echoed it."""
    try:
        password = None if kind_of(location) == "journal" else urlsplit(location).password
    except (ValueError, ConfigError):
        return text
    return text.replace(password, "***") if password else text


def _env_seconds(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number of seconds, got {raw!r}") from None
    if value < 1:
        raise ConfigError(f"{name} must be at least 1 second, got {raw!r}")
    return value


def heartbeat_interval() -> int:
    """Seconds between a running trial's heartbeats (``MERLIN_HEARTBEAT_INTERVAL``, default 5)."""
    return _env_seconds("MERLIN_HEARTBEAT_INTERVAL", HEARTBEAT_INTERVAL)


def heartbeat_grace() -> int:
    """Seconds without a heartbeat after which a RUNNING trial counts as dead.

    ``MERLIN_HEARTBEAT_GRACE``, default 20; always more than the interval.
    """
    return max(_env_seconds("MERLIN_HEARTBEAT_GRACE", HEARTBEAT_GRACE), heartbeat_interval() + 1)


def open_storage(location: str, *, heartbeat: bool = True, create: bool = True) -> BaseStorage:
    """Open the Optuna storage at ``location`` (errors name the location and the fix).

    ``create`` (journal files only): a missing journal file is created (the
    run that creates the study), or, with ``create=False``, a
    :class:`ConfigError` "journal file X does not exist" (a worker joining a
    study must not leave an empty journal behind a mistyped path).

    Servers are contacted at once with short timeouts, so a wrong password, an
    unreachable host or a server that never answers is a :class:`ConfigError`
    within a few seconds, not a hang inside a worker.
    """
    kind = kind_of(location)
    if kind == "journal":
        path = journal_path(location)
        assert path is not None
        directory = os.path.dirname(path) or "."
        if not os.path.isdir(directory):
            raise ConfigError(f"storage: folder {directory!r} of journal file {path!r} does not exist", field="storage")
        if location.startswith(OPEN_LOCK_SCHEME) or default_lock(directory) == "open":
            lock: Any = JournalFileOpenLock(path, grace_period=LOCK_GRACE_SECONDS)
        else:
            lock = JournalFileSymlinkLock(path, grace_period=LOCK_GRACE_SECONDS)
        return BatchedJournalStorage(FlushedJournalFileBackend(path, lock_obj=lock, create=create))
    if kind == "redis":
        return _open_redis(location)
    return _open_rdb(location, heartbeat=heartbeat)


# -- Redis ------------------------------------------------------------------
REDIS_PREFIX_PARAM = "prefix"
#: a Redis command that takes longer than this means the server is gone (journal commands take microseconds)
REDIS_COMMAND_TIMEOUT = 60


def redis_url_and_prefix(location: str) -> tuple[str, str]:
    """Split ``redis://host:port/db?prefix=NAME`` into the URL for redis-py and the journal's key prefix.

    The prefix keeps several projects apart on one Redis database (every
    process replays the whole journal of its prefix, so separate prefixes also
    keep start-up fast); without it the keys are Optuna's defaults
    (``:log_number``, ``:log:N``), which plain Optuna and optuna-dashboard read.
    """
    parts = urlsplit(location)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    prefix = "".join(v for k, v in query if k == REDIS_PREFIX_PARAM)
    rest = urlencode([(k, v) for k, v in query if k != REDIS_PREFIX_PARAM])
    return urlunsplit(parts._replace(query=rest)), prefix


def _redis_client(url: str, command_timeout: float) -> Any:
    import redis

    return redis.Redis.from_url(
        url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=command_timeout, socket_keepalive=True,
    )


class TimeoutJournalRedisBackend(JournalRedisBackend):
    """Optuna's Redis journal with connect/command timeouts (redis-py waits forever by default)."""

    def __init__(self, url: str, prefix: str = "") -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            super().__init__(url, prefix=prefix)
        self._redis = _redis_client(url, REDIS_COMMAND_TIMEOUT)

    def __setstate__(self, state: dict[Any, Any]) -> None:
        self.__dict__.update(state)
        self._redis = _redis_client(self._url, REDIS_COMMAND_TIMEOUT)


def _open_redis(location: str) -> BaseStorage:
    try:
        import redis  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"storage {redact(location)}: a redis:// URL needs the Redis driver: pip install 'merlin-kit[redis]'",
            field="storage",
        ) from None
    url, prefix = redis_url_and_prefix(location)
    try:
        probe = _redis_client(url, CONNECT_TIMEOUT)  # fail now, with a message, rather than inside a worker
        try:
            probe.ping()
        finally:
            probe.close()
        backend = TimeoutJournalRedisBackend(url, prefix=prefix)
        return BatchedJournalStorage(backend)
    except Exception as exc:  # redis raises many unrelated types; all mean "cannot use this server"
        first = " ".join((str(exc).strip().splitlines() or [""])[0].split())
        raise ConfigError(
            f"storage: cannot connect to Redis at {redact(location)}: {type(exc).__name__}: {_scrub(first, location)}",
            field="storage",
        ) from None


# -- SQL databases (Optuna RDBStorage) ----------------------------------------
#: driver module SQLAlchemy imports for each URL dialect, and the extra that installs it
_DRIVERS = {
    "postgresql+psycopg2": ("psycopg2", "postgres"),
    "postgresql+psycopg": ("psycopg", "postgres"), "postgresql+pg8000": ("pg8000", "postgres"),
    "mysql+mysqldb": ("MySQLdb", "mysql"), "mysql+pymysql": ("pymysql", "mysql"),
}


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def rdb_url(location: str) -> str:
    """The SQLAlchemy URL for an RDB location, with a driver that is installed.

    ``postgres://`` (Heroku style) becomes ``postgresql://``; a plain
    ``postgresql://`` uses psycopg2 (the ``[postgres]`` extra), or psycopg 3
    when only that is installed, and a plain ``mysql://`` uses PyMySQL (the
    ``[mysql]`` extra) unless mysqlclient is installed.  A URL naming its driver (``postgresql+psycopg2://``) is kept.
    Raises :class:`ConfigError` naming the extra when no driver is importable.
    """
    scheme, sep, rest = location.partition("://")
    if scheme == "postgres":
        scheme = "postgresql"
    if scheme.startswith("postgres+"):
        scheme = "postgresql+" + scheme.split("+", 1)[1]
    if scheme == "postgresql":  # SQLAlchemy's default driver differs between versions: name one
        only_v3 = not _importable("psycopg2") and _importable("psycopg")
        scheme = "postgresql+psycopg" if only_v3 else "postgresql+psycopg2"
    if scheme == "mysql":
        scheme = "mysql+mysqldb" if _importable("MySQLdb") else "mysql+pymysql"
    driver = _DRIVERS.get(scheme)
    if driver is not None and not _importable(driver[0]):
        raise ConfigError(
            f"storage {redact(location)}: the {driver[0]} driver is not installed: "
            f"pip install 'merlin-kit[{driver[1]}]'", field="storage"
        )
    return scheme + sep + rest


def _connect_args(url: str, *, probe: bool) -> dict[str, Any]:
    """Driver options that bound every wait: connecting, and (for the probe) the server's first answer."""
    scheme = url.split("://", 1)[0]
    if scheme.startswith("postgresql"):
        # libpq's connect_timeout covers the whole log-in; keepalives notice a vanished server mid-run
        if scheme.endswith("pg8000"):
            return {"timeout": CONNECT_TIMEOUT}
        return {"connect_timeout": CONNECT_TIMEOUT,
                "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
    if scheme.startswith("mysql"):
        # PyMySQL's connect_timeout covers only the TCP connect; the hand-shake read needs read_timeout
        args: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT}
        if probe:
            args.update(read_timeout=CONNECT_TIMEOUT, write_timeout=CONNECT_TIMEOUT)
        return args
    return {}


def _open_rdb(location: str, *, heartbeat: bool) -> BaseStorage:
    url = rdb_url(location)
    is_sqlite = url.startswith("sqlite")
    try:
        if not is_sqlite:
            # a throw-away connection with every wait bounded: wrong password, unknown host, a server that
            # accepts but never answers -> an error in seconds (RDBStorage itself would wait much longer)
            import sqlalchemy
            from sqlalchemy.pool import NullPool

            engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=_connect_args(url, probe=True))
            try:
                with engine.connect():
                    pass
            finally:
                engine.dispose()
        engine_kwargs = {"connect_args": _connect_args(url, probe=False), "pool_pre_ping": True}
        kwargs: dict[str, Any] = {"engine_kwargs": engine_kwargs}
        if is_sqlite:
            kwargs = {}
        elif heartbeat:
            kwargs.update(heartbeat_interval=heartbeat_interval(), grace_period=heartbeat_grace())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            rdb = optuna.storages.RDBStorage(url, **kwargs)
        # the same trial cache that optuna.create_study/load_study put around an RDBStorage: a study and the
        # storage we call directly must share it (a trial claimed through one must be known to the other),
        # and it reads only new or unfinished trials from the server on each poll
        return optuna.storages.get_storage(rdb)
    except ConfigError:
        raise
    except Exception as exc:  # sqlalchemy/driver errors: wrong password, unreachable host, missing database
        orig = getattr(exc, "orig", None) or exc  # the driver's own error inside SQLAlchemy's wrapper
        first = " ".join((str(orig).strip().splitlines() or [""])[0].split())
        raise ConfigError(
            f"storage: cannot open {redact(location)}: {type(orig).__name__}: {_scrub(first, location)}",
            field="storage",
        ) from None


def close_storage(storage: BaseStorage) -> None:
    """Release a storage's server connections now rather than at garbage collection (best effort)."""
    backend = getattr(storage, "_backend", storage)
    try:
        if isinstance(backend, optuna.storages.RDBStorage):
            backend.engine.dispose()
        elif isinstance(backend, JournalStorage) and isinstance(backend._backend, JournalRedisBackend):
            backend._backend._redis.close()
    except Exception:  # closing is a courtesy to the server; never an error
        pass


class StorageUnavailableError(OptimizationError):
    """The study's storage stopped answering during a run (server stopped, network gone)."""


#: (module, class name) of the driver errors that mean "the server is gone", matched without importing drivers
_GONE_TYPES = (
    ("sqlalchemy.exc", "OperationalError"), ("sqlalchemy.exc", "InterfaceError"),
    ("sqlalchemy.exc", "DisconnectionError"), ("psycopg2", "OperationalError"), ("psycopg2", "InterfaceError"),
    ("pymysql.err", "OperationalError"), ("redis.exceptions", "ConnectionError"),
    ("redis.exceptions", "TimeoutError"), ("builtins", "ConnectionError"), ("builtins", "TimeoutError"),
)


def storage_unavailable(exc: BaseException, location: str) -> StorageUnavailableError | None:
    """The one-line error for ``exc`` when it means the storage went away; None for any other exception.

    Every process of a run meets the same lost server at once; turning the
    drivers' tracebacks into this one line keeps the message readable.
    """
    if isinstance(exc, StorageUnavailableError):
        return exc
    gone_types = tuple(getattr(sys.modules.get(m), n) for m, n in _GONE_TYPES
                       if hasattr(sys.modules.get(m), n))
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, gone_types):
            orig = getattr(cause, "orig", None) or cause
            first = " ".join((str(orig).strip().splitlines() or [""])[0].split())
            return StorageUnavailableError(
                f"storage {redact(location)} stopped answering during the run ({type(orig).__name__}: "
                f"{_scrub(first, location)}); the trials finished so far are in the study, and a run that resumes "
                "it fails the trials left RUNNING")
        cause = cause.__cause__ or cause.__context__
    return None


def in_memory_copy(study_name: str, storage: BaseStorage) -> optuna.Study:
    """Keep the study usable (plots, analysis) after its temporary journal is deleted."""
    memory = optuna.storages.InMemoryStorage()
    optuna.copy_study(from_study_name=study_name, from_storage=storage, to_storage=memory)
    return optuna.load_study(study_name=study_name, storage=memory)
