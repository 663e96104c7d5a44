"""Storage locations -> Optuna storages, shared by the parent and every worker.

A *location* is one string that a worker on any machine can open: a journal
file path (the default, one machine), ``journal+open:///path`` (the same with
``JournalFileOpenLock``, what Windows and NFS need), ``redis://...`` (Optuna's
journal on Redis), or an RDB URL (``postgresql://``, ``mysql://``,
``sqlite:///`` for one worker).
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any
from urllib.parse import urlsplit

import optuna
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalFileSymlinkLock

from ..errors import ConfigError

#: seconds after which a lock held by a dead process is broken (Optuna's default is 30)
LOCK_GRACE_SECONDS = 3
OPEN_LOCK_SCHEME = "journal+open://"
RDB_SCHEMES = ("postgresql", "postgres", "mysql", "sqlite")
#: RDB heartbeat: a worker silent for this long has its RUNNING trial marked FAIL
HEARTBEAT_INTERVAL = 5
HEARTBEAT_GRACE = 20
CONNECT_TIMEOUT = 5


class FlushedJournalFileBackend(JournalFileBackend):
    """A journal file whose appends reach the OS at once but are not fsync'ed one by one.

    Optuna fsyncs every log line; a trial writes one line per parameter,
    attribute and state change, so on ordinary disks fsync costs more than the
    backtest and the sampler together (~2 ms a line here).  Appends stay atomic
    under the lock and are visible to every process immediately, and a killed
    process loses nothing; only an OS crash or power loss could lose the last
    lines, which :func:`sync_journal` (called when a run ends) closes.
    """

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        payload = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode("utf-8")
        self._lock.acquire()
        try:
            with open(self._file_path, "ab") as fh:
                fh.write(payload)
        finally:
            self._lock.release()


def symlinks_supported(directory: str) -> bool:
    """Whether the journal's default symlink lock works in ``directory`` (not on some Windows/NFS setups)."""
    probe = os.path.join(directory, f".merlin-symlink-probe-{os.getpid()}")
    try:
        os.symlink(probe + ".target", probe)
    except (OSError, NotImplementedError):
        return False
    os.unlink(probe)
    return True


def journal_location(path: str | os.PathLike, lock: str = "auto") -> str:
    """Location string of a journal file; ``lock`` is ``symlink``, ``open`` or ``auto``."""
    path = os.path.abspath(os.fspath(path))
    if lock not in ("auto", "symlink", "open"):
        raise ConfigError(f"journal lock must be auto, symlink or open, got {lock!r}")
    if lock == "open" or (lock == "auto" and not symlinks_supported(os.path.dirname(path) or ".")):
        return OPEN_LOCK_SCHEME + path
    return path


def kind_of(location: str) -> str:
    """``journal``, ``redis`` or ``rdb``."""
    if location.startswith(OPEN_LOCK_SCHEME):
        return "journal"
    scheme = urlsplit(location).scheme.split("+")[0]
    if scheme in ("redis", "rediss", "unix") and "://" in location:
        return "redis"
    if scheme in RDB_SCHEMES and "://" in location:
        return "rdb"
    return "journal"


def journal_path(location: str) -> str | None:
    """The journal file of a journal location (None for servers)."""
    if kind_of(location) != "journal":
        return None
    return location[len(OPEN_LOCK_SCHEME):] if location.startswith(OPEN_LOCK_SCHEME) else location


def sync_journal(location: str) -> None:
    """fsync a journal file once, so a finished run survives a power loss."""
    path = journal_path(location)
    if path is not None and os.path.exists(path):
        with open(path, "ab") as fh:
            os.fsync(fh.fileno())


def redact(location: str) -> str:
    """Location with any password replaced, for logs and summaries."""
    parts = urlsplit(location)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return location.replace(parts.netloc, netloc)
    return location


def open_storage(location: str, *, heartbeat: bool = True) -> BaseStorage:
    """Open the Optuna storage at ``location`` (errors name the location and the fix)."""
    kind = kind_of(location)
    if kind == "journal":
        path = journal_path(location)
        assert path is not None
        directory = os.path.dirname(path) or "."
        if not os.path.isdir(directory):
            raise ConfigError(f"storage: folder {directory!r} of journal file {path!r} does not exist")
        if location.startswith(OPEN_LOCK_SCHEME):
            lock: Any = JournalFileOpenLock(path, grace_period=LOCK_GRACE_SECONDS)
        else:
            lock = JournalFileSymlinkLock(path, grace_period=LOCK_GRACE_SECONDS)
        return JournalStorage(FlushedJournalFileBackend(path, lock_obj=lock))
    if kind == "redis":
        return _open_redis(location)
    return _open_rdb(location, heartbeat=heartbeat)


def _open_redis(location: str) -> BaseStorage:
    try:
        import redis  # noqa: F401
    except ImportError:
        raise ConfigError("storage: a redis:// URL needs the Redis driver: pip install 'merlin-kit[redis]'") from None
    from optuna.storages.journal import JournalRedisBackend

    try:
        backend = JournalRedisBackend(location)
        backend._redis.ping()  # fail now, with a message, rather than inside a worker
    except Exception as exc:  # redis raises many unrelated types; all mean "cannot use this server"
        raise ConfigError(f"storage: cannot connect to Redis at {redact(location)}: {exc}") from None
    return JournalStorage(backend)


def _open_rdb(location: str, *, heartbeat: bool) -> BaseStorage:
    scheme = urlsplit(location).scheme
    engine_kwargs: dict[str, Any] = {}
    if scheme.startswith(("postgresql", "postgres")):
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            try:
                import psycopg  # noqa: F401
            except ImportError:
                raise ConfigError("storage: a postgresql:// URL needs a driver: pip install 'merlin-kit[postgres]'") from None
        engine_kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT}}
    elif scheme.startswith("mysql"):
        try:
            import pymysql  # noqa: F401
        except ImportError:
            raise ConfigError("storage: a mysql:// URL needs a driver: pip install 'merlin-kit[mysql]'") from None
        engine_kwargs = {"connect_args": {"connect_timeout": CONNECT_TIMEOUT}}
    kwargs: dict[str, Any] = {"engine_kwargs": engine_kwargs}
    if heartbeat and not scheme.startswith("sqlite"):
        kwargs.update(heartbeat_interval=HEARTBEAT_INTERVAL, grace_period=HEARTBEAT_GRACE)
    try:
        return optuna.storages.RDBStorage(location, **kwargs)
    except Exception as exc:  # sqlalchemy/driver errors: wrong password, unreachable host, missing database
        raise ConfigError(f"storage: cannot open {redact(location)}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None


def host_id() -> str:
    """Identifies this machine in trial ownership records (pid liveness is only checked locally)."""
    return socket.gethostname()
