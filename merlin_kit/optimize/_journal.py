"""The journal file the kit writes: appends that are atomic, repaired and never left half written.

Optuna's own file backend fsyncs every line and leaves a partial last line in
place after a kill or a full disk; the next append then glues onto it and the
study can no longer be read by anybody.  :class:`FlushedJournalFileBackend`
keeps the format (plain Optuna and optuna-dashboard read the file) and changes
what happens around a failure.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator
from typing import Any

from optuna.storages.journal import JournalFileBackend

from ..errors import ConfigError, OptimizationError

log = logging.getLogger(__name__)


class FlushedJournalFileBackend(JournalFileBackend):
    """A journal file whose appends reach the OS at once but are not fsync'ed one by one.

    Optuna fsyncs every log line; a trial writes one line per parameter,
    attribute and state change, so on ordinary disks fsync costs more than the
    backtest and the sampler together (~2 ms a line here).  Appends stay atomic
    under the lock and are visible to every process immediately, and a killed
    process loses nothing; only an OS crash or power loss could lose the last
    lines, which :func:`sync_journal` (called when a run ends) closes.

    Integrity: a writer killed mid-write (or one that ran out of disk before
    this class existed) leaves a *torn* last line without its end of line.
    Readers ignore it (a line still being written looks the same); the next
    append, under the lock, moves those bytes to ``<journal>.torn-<UTC time>``
    and truncates the journal to its last complete line, so the new line does
    not glue onto the torn one (which would make the study unreadable).  An
    append that fails (disk full) truncates back to the size it found, so it
    leaves nothing partial behind, and raises :class:`OptimizationError`.  A
    damaged line *inside* the file is an error naming the file and line.
    """

    def __init__(self, file_path: str, lock_obj: Any = None, *, create: bool = True) -> None:
        if not create and not os.path.isfile(file_path):
            raise ConfigError(f"storage: journal file {file_path!r} does not exist", field="storage")
        super().__init__(file_path, lock_obj=lock_obj)

    # -- reading ---------------------------------------------------------------------------
    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        """Optuna's reader, but a damaged line names the file and line; only the last line may be partial.

        A last line without its end of line is not a log yet (another process
        is writing it, or a killed writer left it): it is skipped, as Optuna
        does.  Any line that ends but is not a journal entry is an error,
        never skipped (Optuna skips such a line silently when it is the last).
        """
        offsets = self._log_number_offset
        number, offset = (log_number_from, offsets[log_number_from]) if log_number_from in offsets else (0, 0)
        with open(self._file_path, "rb") as fh:
            remaining = os.fstat(fh.fileno()).st_size - offset  # lines appended from now on: next time
            fh.seek(offset)
            carry = b""
            while remaining > 0:
                chunk = fh.read(min(_READ_CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                lines = (carry + chunk).split(b"\n")
                carry = lines.pop()  # the part after the last end of line: completed by the next chunk, or partial
                for line in lines:
                    offset += len(line) + 1
                    if number >= log_number_from:
                        log = self._parse_line(line, number)
                        offsets[number + 1] = offset
                        number += 1
                        yield log
                    else:
                        offsets[number + 1] = offset
                        number += 1

    def _parse_line(self, line: bytes, number: int) -> dict[str, Any]:
        try:
            log = json.loads(line)
        except ValueError as exc:
            reason = f"not valid JSON ({exc})"
        else:
            if isinstance(log, dict) and "op_code" in log:
                return log
            reason = "not a journal entry (no op_code)"
        raise ConfigError(
            f"storage: journal file {self._file_path!r} is damaged at line {number + 1}: {reason}; "
            f"the {number} lines before it are intact, but nothing after it can be read "
            f"(a cut-off write followed by more writes, or an edit)", field="storage",
        )

    # -- writing ---------------------------------------------------------------------------
    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        payload = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode("utf-8")
        self._lock.acquire()
        try:
            self._append_locked(payload)
        finally:
            self._lock.release()

    def _append_locked(self, payload: bytes) -> None:
        try:  # no O_CREAT: a journal deleted under a running study must not restart as an empty file
            fd = os.open(self._file_path, os.O_RDWR | os.O_APPEND | getattr(os, "O_BINARY", 0))
        except OSError as exc:
            raise OptimizationError(f"journal {self._file_path}: cannot open it for writing: {exc.strerror}") from exc
        try:
            size = os.fstat(fd).st_size
            if size and _read_at(fd, size - 1, 1) != b"\n":  # one byte under the lock: cheap
                size = self._move_torn_tail(fd, size)
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view):]
            except BaseException as exc:  # disk full, file size limit, an interrupt between two writes
                try:
                    os.ftruncate(fd, size)  # back to the last complete line: nothing partial is left
                    cut_back = True
                except OSError:
                    cut_back = False
                    log.error("journal %s: could not remove a partly written line; the next append moves it aside",
                              self._file_path)
                if isinstance(exc, OSError):
                    raise self._write_error(exc, cut_back) from exc
                raise
        finally:
            os.close(fd)

    def _write_error(self, exc: OSError, cut_back: bool) -> OptimizationError:
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            what = "disk full"
        elif exc.errno == errno.EFBIG:
            what = "file size limit reached"
        else:
            what = exc.strerror or type(exc).__name__
        left = ("nothing partial was left" if cut_back
                else "a partial line is left, which the next append moves aside")
        return OptimizationError(
            f"journal {self._file_path}: {what} while writing; {left}: "
            f"the study is intact up to the last complete trial"
        )

    def _move_torn_tail(self, fd: int, size: int) -> int:
        """Move the bytes after the last end of line to a side file; the journal's new size."""
        keep, pos = 0, size
        while pos > 0:
            step = min(_READ_CHUNK, pos)
            pos -= step
            at = _read_at(fd, pos, step).rfind(b"\n")
            if at >= 0:
                keep = pos + at + 1
                break
        torn = _read_at(fd, keep, size - keep)
        if not JOURNAL_LINE_START.startswith(torn[:len(JOURNAL_LINE_START)]):
            raise ConfigError(
                f"storage: journal file {self._file_path!r} does not end with a complete line and its last "
                f"{len(torn)} bytes are not the start of a journal entry; not an Optuna journal? (left untouched)",
                field="storage",
            )
        side = f"{self._file_path}.torn-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        try:
            with open(side, "ab") as fh:
                fh.write(torn)
                fh.flush()
                os.fsync(fh.fileno())
            saved = f"moved them to {side}"
        except OSError as exc:  # (disk full) the bytes are a partial line nobody can read: the journal comes first
            saved = f"could not save them to {side} ({exc.strerror}), dropped them"
        os.ftruncate(fd, keep)
        message = (f"journal {self._file_path}: its last line was cut off ({len(torn)} bytes without an end of "
                   f"line, left by a writer that was killed or ran out of disk); {saved} and continued after "
                   f"the last complete line")
        log.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        return keep


#: every line of an Optuna journal starts with this
JOURNAL_LINE_START = b'{"op_code":'
_READ_CHUNK = 1 << 20
_HAVE_PREAD = hasattr(os, "pread")


def _read_at(fd: int, offset: int, length: int) -> bytes:
    """``length`` bytes at ``offset`` (fewer at end of file), without pread (not on Windows)."""
    if _HAVE_PREAD:
        parts = []
        while length > 0:
            part = os.pread(fd, length, offset)
            if not part:
                break
            parts.append(part)
            offset += len(part)
            length -= len(part)
        return b"".join(parts)
    os.lseek(fd, offset, os.SEEK_SET)
    parts = []
    while length > 0:
        part = os.read(fd, length)
        if not part:
            break
        parts.append(part)
        length -= len(part)
    return b"".join(parts)
