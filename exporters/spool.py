"""A bounded on-disk queue of push payloads not yet accepted by the collector.

One file per payload, named by a sequence number so that listing the
directory gives send order, also across restarts. When full (too many files
or too many bytes) the oldest payloads are dropped and counted: the newest
data is the most useful to an operator whose host was cut off.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

# 24 h of payloads at the default 15 s interval.
DEFAULT_MAX_FILES = 5760
# A gzip'd 8-GPU payload is ~3 KiB; 64 MiB holds far more than a day of them
# and stays small on a host's disk.
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

SUFFIX = ".prom.gz"


class Spool:
    """Payloads in a directory, oldest first, bounded in count and bytes."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        max_files: int = DEFAULT_MAX_FILES,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if max_files < 1 or max_bytes < 1:
            raise ValueError("spool limits must be positive")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_files = max_files
        self.max_bytes = max_bytes
        self.dropped = 0
        self._lock = threading.Lock()
        # Leftovers of a write cut short by a crash are not payloads.
        for partial in self.directory.glob("*.tmp"):
            partial.unlink(missing_ok=True)
        self._files: list[tuple[Path, int]] = [
            (p, p.stat().st_size) for p in sorted(self.directory.glob("*" + SUFFIX))
        ]
        self._bytes = sum(size for _, size in self._files)
        self._next = int(self._files[-1][0].name.split(".")[0]) + 1 if self._files else 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._files)

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes

    def put(self, payload: bytes) -> None:
        """Append a payload, dropping the oldest ones if the spool is full."""
        with self._lock:
            path = self.directory / f"{self._next:016d}{SUFFIX}"
            self._next += 1
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(payload)
            os.replace(tmp, path)  # a crash never leaves half a payload
            self._files.append((path, len(payload)))
            self._bytes += len(payload)
            while len(self._files) > self.max_files or (
                self._bytes > self.max_bytes and len(self._files) > 1
            ):
                old, size = self._files.pop(0)
                old.unlink(missing_ok=True)
                self._bytes -= size
                self.dropped += 1
                log.warning("push spool full: dropped oldest payload %s", old.name)

    def peek(self) -> tuple[Path, bytes] | None:
        """Return the oldest payload, or None if empty."""
        with self._lock:
            while self._files:
                path, size = self._files[0]
                try:
                    return path, path.read_bytes()
                except FileNotFoundError:  # removed behind our back
                    self._files.pop(0)
                    self._bytes -= size
            return None

    def remove(self, path: Path) -> None:
        """Remove a payload (sent, or permanently rejected)."""
        with self._lock:
            for i, (p, size) in enumerate(self._files):
                if p == path:
                    del self._files[i]
                    self._bytes -= size
                    break
            path.unlink(missing_ok=True)
