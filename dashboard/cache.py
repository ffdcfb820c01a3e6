"""A cache shared by the dashboard's worker processes: one computation per key.

gunicorn runs several worker processes; each visitor's request lands in one
of them. A per-process cache would compute the snapshot once per worker per
tick; this one computes it once per tick in all: the first process to miss
takes an exclusive ``flock`` on the key's lock file, computes, and writes the
value atomically (a temporary file renamed into place); the others wait on
the lock and then read the file. In front of the files, each process keeps
the values it has read in memory, so a hit costs no system call beyond a
dictionary lookup.

Values are pickled: the cache directory is created by this process with mode
0700 and holds nothing anyone else wrote.
"""

from __future__ import annotations

import fcntl
import os
import pickle
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# Values kept in each process's memory, newest first; a tick's snapshot and
# tables, the history points and node details all fit well within this.
MEMORY_ITEMS = 256
# Files older than this are removed when new values are written (history
# points are kept by their own, longer age).
FILE_MAX_AGE_S = 15 * 60
# The log of computations (one line each, about four a minute) is rotated at
# this size, one old generation kept: weeks of lines, never the disk.
LOG_MAX_BYTES = 1 << 20


def _require_private(path: Path) -> None:
    from fleetscope.errors import FleetscopeError

    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() \
            or st.st_mode & 0o077:
        raise FleetscopeError(f"the dashboard's cache directory {path} must be a directory of this user's with "
                              "mode 0700 (not a link); fix it or choose another with --cache-dir")


class SharedCache:
    """Values computed once across processes, keyed by a file-name-safe string."""

    def __init__(self, directory: Path, *, memory_items: int = MEMORY_ITEMS,
                 log_max_bytes: int = LOG_MAX_BYTES) -> None:
        self.directory = Path(directory)
        self.log_max_bytes = log_max_bytes
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Values are unpickled from here: the directory and its parent must be
        # this user's own, closed to others, and not links someone else placed.
        for path in (self.directory.parent, self.directory):
            _require_private(path)
        self._memory: OrderedDict[str, Any] = OrderedDict()
        self._memory_items = memory_items
        self._lock = threading.Lock()
        self._last_sweep = 0.0

    def get(self, key: str, compute: Callable[[], T], *, keep_s: float = FILE_MAX_AGE_S) -> T:
        """The value of ``key``: from memory, else from the shared file, else ``compute()`` once for all."""
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
        path = self.directory / f"{key}.pickle"
        value = self._read(path)
        if value is None:
            with self._open_lock(key) as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    value = self._read(path)
                    if value is None:
                        value = (compute(),)
                        self._write(path, value, keep_s=keep_s)
                        self._record(key)
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        with self._lock:
            self._memory[key] = value[0]
            while len(self._memory) > self._memory_items:
                self._memory.popitem(last=False)
        return value[0]

    def _open_lock(self, key: str):
        """The lock file of ``key``, the directory made again (private) if it was removed under us (a tmp
        cleaner, or someone clearing the cache by hand): a missing directory must not turn every request into a
        500."""
        try:
            return open(self.directory / f"{key}.lock", "a+b")
        except FileNotFoundError:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            _require_private(self.directory)
            return open(self.directory / f"{key}.lock", "a+b")

    def local(self, key: str, compute: Callable[[], T]) -> T:
        """The value of ``key`` from this process's memory, else ``compute()`` (not shared: for rendered pages)."""
        with self._lock:
            if key in self._memory:
                self._memory.move_to_end(key)
                return self._memory[key]
        value = compute()
        with self._lock:
            self._memory[key] = value
            while len(self._memory) > self._memory_items:
                self._memory.popitem(last=False)
        return value

    def computations(self) -> list[str]:
        """The computations recorded in this directory (the log and its previous generation), one "time pid key"
        line each, oldest first (for tests and benchmarks)."""
        lines = []
        for name in ("computed.log.1", "computed.log"):
            try:
                lines += (self.directory / name).read_text().splitlines()
            except FileNotFoundError:
                pass
        return lines

    @staticmethod
    def _read(path: Path) -> tuple | None:
        try:
            with open(path, "rb") as f:
                return pickle.load(f)
        except FileNotFoundError:
            return None
        except Exception:  # noqa: BLE001 (a truncated or outdated file is a miss, not an error page)
            path.unlink(missing_ok=True)
            return None

    def _write(self, path: Path, value: tuple, *, keep_s: float) -> None:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            pickle.dump(value, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
        # The file's mtime says until when it is worth keeping.
        expires = time.time() + max(keep_s - FILE_MAX_AGE_S, 0)
        os.utime(path, (expires, expires))
        self._sweep()

    def _record(self, key: str) -> None:
        path = self.directory / "computed.log"
        with open(path, "a") as log:
            log.write(f"{time.time():.3f} {os.getpid()} {key}\n")
            full = log.tell() > self.log_max_bytes
        if full:  # (atomic: another process appending meanwhile writes into the generation kept)
            os.replace(path, self.directory / "computed.log.1")

    def _sweep(self) -> None:
        now = time.time()
        if now - self._last_sweep < 60:
            return
        self._last_sweep = now
        for path in self.directory.glob("*.pickle"):
            try:
                if path.stat().st_mtime < now - FILE_MAX_AGE_S:
                    path.unlink()
                    path.with_suffix(".lock").unlink(missing_ok=True)
            except FileNotFoundError:
                pass
