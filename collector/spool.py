"""The writer's on-disk spool: write groups that could not reach the database.

While the database is unreachable, every group the writer builds is written
here, one file per group, named by a sequence number so they replay in
order. A file is written to a temporary name, fsync'd and renamed, so a crash
leaves either the whole group or nothing. A group is removed only after the
transaction that wrote it (and recorded its id in ``ingest_batches``)
committed; a replay of a group that did commit finds its id and is skipped,
so nothing is written twice.

Groups the database refuses for a reason other than being unreachable (a
constraint the data violates) would block the spool forever if retried. The
writer then retries such a group node by node, and only the refused nodes'
parts move to ``rejected/`` with the error beside them, are counted, and stay
on disk for an operator to look at: kept, never silently dropped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SUFFIX = ".group"


class Spool:
    """An ordered directory of JSON write groups."""

    def __init__(self, directory: Path, *, max_bytes: int) -> None:
        self.directory = directory
        self.rejected_dir = directory / "rejected"
        self.max_bytes = max_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob("*.tmp"):  # a crash mid-write: the group was never complete
            stale.unlink()
        self._files = sorted(self.directory.glob(f"*{SUFFIX}"))
        self._bytes = sum(p.stat().st_size for p in self._files)
        # Numbering continues past rejected groups too, so a rejected group is
        # never overwritten by a later one of the same number.
        numbers = [int(p.name.removesuffix(SUFFIX))
                   for p in [*self._files, *self.rejected_dir.glob(f"*{SUFFIX}")]]
        self._next = max(numbers, default=0) + 1

    def __len__(self) -> int:
        return len(self._files)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def full(self) -> bool:
        return self._bytes >= self.max_bytes

    def append(self, group: dict[str, Any]) -> None:
        """Write ``group`` durably at the tail."""
        path = self.directory / f"{self._next:016d}{SUFFIX}"
        self._next += 1
        data = json.dumps(group, separators=(",", ":")).encode()
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.rename(path)
        self._files.append(path)
        self._bytes += len(data)

    def head(self) -> tuple[Path, dict[str, Any]] | None:
        """The oldest group and its path, or None when empty."""
        if not self._files:
            return None
        path = self._files[0]
        return path, json.loads(path.read_bytes())

    def remove(self, path: Path) -> None:
        """Drop the head group once it is safely in the database."""
        assert self._files and self._files[0] == path, "groups leave the spool in order"
        self._bytes -= path.stat().st_size
        path.unlink()
        self._files.pop(0)

    def reject(self, path: Path, error: str) -> None:
        """Move the head group aside with the database's reason."""
        assert self._files and self._files[0] == path
        self.rejected_dir.mkdir(exist_ok=True)
        self._bytes -= path.stat().st_size
        path.rename(self.rejected_dir / path.name)
        (self.rejected_dir / (path.name + ".error")).write_text(error + "\n")
        self._files.pop(0)

    def keep_rejected(self, group: dict[str, Any], error: str) -> None:
        """Write ``group`` straight into ``rejected/`` with the database's reason (a refused part of a group)."""
        self.rejected_dir.mkdir(exist_ok=True)
        path = self.rejected_dir / f"{self._next:016d}{SUFFIX}"
        self._next += 1
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(json.dumps(group, separators=(",", ":")).encode())
            f.flush()
            os.fsync(f.fileno())
        tmp.rename(path)
        (self.rejected_dir / (path.name + ".error")).write_text(error + "\n")

    @property
    def rejected(self) -> int:
        return len(list(self.rejected_dir.glob(f"*{SUFFIX}"))) if self.rejected_dir.exists() else 0
