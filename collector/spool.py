"""The writer's on-disk spool: write groups that could not reach the database, and their JSON form.

While the database is unreachable, every group a bucket writer builds is
written here, one file per group, named by a sequence number so they replay in
order, and by the writer that owns it (its bucket of nodes): each writer
replays its own groups, oldest first, before it writes a new one, so a node's
rows reach the database in the order they came, and one writer's spooled
groups never hold up another. A file is written to a temporary name, fsync'd
and renamed, so a crash leaves either the whole group or nothing. A group is
removed only after the transaction that wrote it (and recorded its id in
``ingest_batches``) committed; a replay of a group that did commit finds its
id and is skipped, so nothing is written twice.

A file without an owner (written before writers had buckets), or whose owner
is beyond this process's writers (the writer count changed across a restart),
is replayed by writer ``owner % writers`` (writer 0 for none): every group is
still written exactly once, though a node whose bucket changed may then see
its new rows before its old ones (rows are keyed by time; a late row below the
rollup's watermark marks it for recomputation).

Groups the database refuses for a reason other than being unreachable (a
constraint the data violates) would block the spool forever if retried. The
writer then retries such a group node by node, and only the refused nodes'
parts move to ``rejected/`` with the error beside them, are counted, and stay
on disk for an operator to look at: kept, never silently dropped.

On disk a group is JSON (``to_spool``): its rows as arrays in column order,
times as exact integer microseconds since the epoch, so a spooled group
replays exactly as it would have been written (``from_spool``).
"""

from __future__ import annotations

import json
import os
from collections import deque
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from collector.group import Beat, Group, IdentityRow, Observation, SetRow, sample_blocks, sample_rows

SUFFIX = ".group"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class Spool:
    """An ordered directory of JSON write groups, each owned by one of ``owners`` writers."""

    def __init__(self, directory: Path, *, max_bytes: int, owners: int = 1) -> None:
        self.directory = directory
        self.rejected_dir = directory / "rejected"
        self.max_bytes = max_bytes
        self.owners = owners
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in self.directory.glob("*.tmp"):  # a crash mid-write: the group was never complete
            stale.unlink()
        files = sorted(self.directory.glob(f"*{SUFFIX}"))
        self._files: list[deque[Path]] = [deque() for _ in range(owners)]
        for path in files:
            self._files[self._owner(path)].append(path)
        self._count = len(files)
        self._bytes = sum(p.stat().st_size for p in files)
        # Numbering continues past rejected groups too, so a rejected group is
        # never overwritten by a later one of the same number.
        numbers = [_number(p) for p in [*files, *self.rejected_dir.glob(f"*{SUFFIX}")]]
        self._next = max(numbers, default=0) + 1

    def _owner(self, path: Path) -> int:
        _, _, owner = path.name.removesuffix(SUFFIX).partition("-")
        return int(owner) % self.owners if owner else 0

    def __len__(self) -> int:
        return self._count

    def pending(self, owner: int) -> int:
        """How many of ``owner``'s groups wait here."""
        return len(self._files[owner])

    @property
    def size_bytes(self) -> int:
        return self._bytes

    @property
    def full(self) -> bool:
        return self._bytes >= self.max_bytes

    def append(self, group: dict[str, Any], owner: int = 0) -> None:
        """Write ``group`` (``to_spool``'s form) durably at ``owner``'s tail."""
        path = self.directory / f"{self._next:016d}-{owner}{SUFFIX}"
        self._next += 1
        data = json.dumps(group, separators=(",", ":")).encode()
        _write_durably(path, data)
        self._files[owner].append(path)
        self._count += 1
        self._bytes += len(data)

    def head(self, owner: int | None = None) -> tuple[Path, dict[str, Any]] | None:
        """``owner``'s oldest group (None: the oldest of all) and its path, or None when there is none."""
        if owner is None:
            heads = [files[0] for files in self._files if files]
            path = min(heads, key=_number, default=None)
        else:
            path = self._files[owner][0] if self._files[owner] else None
        if path is None:
            return None
        return path, json.loads(path.read_bytes())

    def _pop(self, path: Path) -> None:
        files = self._files[self._owner(path)]
        assert files and files[0] == path, "an owner's groups leave the spool in order"
        self._bytes -= path.stat().st_size
        files.popleft()
        self._count -= 1

    def remove(self, path: Path) -> None:
        """Drop a head group once it is safely in the database."""
        self._pop(path)
        path.unlink()

    def reject(self, path: Path, error: str) -> None:
        """Move a head group aside with the database's reason."""
        self._pop(path)
        self.rejected_dir.mkdir(exist_ok=True)
        path.rename(self.rejected_dir / path.name)
        (self.rejected_dir / (path.name + ".error")).write_text(error + "\n")

    def keep_rejected(self, group: dict[str, Any], error: str) -> None:
        """Write ``group`` straight into ``rejected/`` with the database's reason (a refused part of a group)."""
        self.rejected_dir.mkdir(exist_ok=True)
        path = self.rejected_dir / f"{self._next:016d}{SUFFIX}"
        self._next += 1
        _write_durably(path, json.dumps(group, separators=(",", ":")).encode())
        (self.rejected_dir / (path.name + ".error")).write_text(error + "\n")

    @property
    def rejected(self) -> int:
        return len(list(self.rejected_dir.glob(f"*{SUFFIX}"))) if self.rejected_dir.exists() else 0


def _number(path: Path) -> int:
    return int(path.name.removesuffix(SUFFIX).partition("-")[0])


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.rename(path)


# -- the codec -------------------------------------------------------------------


def _us(t: datetime) -> int:
    """Microseconds since the epoch, exactly."""
    return (t - EPOCH) // timedelta(microseconds=1)


def _dt(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def _times_out(rows: Any, positions: tuple[int, ...]) -> list[list]:
    return [[_us(v) if i in positions else v for i, v in enumerate(row)] for row in rows]


def _times_in(rows: list[list], positions: tuple[int, ...]) -> list[list]:
    return [[_dt(v) if i in positions else v for i, v in enumerate(row)] for row in rows]


def to_spool(group: Group) -> dict[str, Any]:
    """A group as JSON-able data: rows as arrays, times as integer microseconds since the epoch (exact)."""
    beat = group.beat
    return {"id": group.id, "beat": None if beat is None else [_us(beat.period_start), _us(beat.at)],
            "obs": _times_out(group.observations, (0,)), "samples": _times_out(sample_rows(group.samples), (0,)),
            "ids": _times_out(group.identities, (1, 2)), "sets": _times_out(group.sets, (1,))}


def from_spool(data: dict[str, Any]) -> Group:
    """The inverse of ``to_spool`` (the group's COPY data is formatted when it is written)."""
    beat = data["beat"]
    return Group(data["id"],
                 observations=[Observation(*row) for row in _times_in(data["obs"], (0,))],
                 samples=sample_blocks(_times_in(data["samples"], (0,))),
                 identities=[IdentityRow(*row) for row in _times_in(data["ids"], (1, 2))],
                 sets=[SetRow(*row) for row in _times_in(data["sets"], (1,))],
                 beat=None if beat is None else Beat(_dt(beat[0]), _dt(beat[1])))
