"""The snapshot is computed once per tick however many visitors and worker processes ask for it."""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dashboard.cache import SharedCache
from tests.dashboard_harness import get


def _ask(directory: str, key: str, out) -> None:
    def compute():
        time.sleep(0.3)  # long enough that every process arrives while it runs
        return {"computed_by": multiprocessing.current_process().pid}
    out.put(SharedCache(Path(directory)).get(key, compute))


def test_worker_processes_share_one_computation_per_key(tmp_path):
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_ask, args=(str(tmp_path), "snapshot-1", out)) for _ in range(8)]
    for p in procs:
        p.start()
    results = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(10)
    assert len({r["computed_by"] for r in results}) == 1
    assert len(SharedCache(tmp_path).computations()) == 1


def test_a_value_is_kept_in_memory_after_the_first_read(tmp_path):
    cache = SharedCache(tmp_path)
    calls = []
    assert cache.get("k", lambda: calls.append(1) or "v") == "v"
    (tmp_path / "k.pickle").unlink()  # a memory hit does not touch the file
    assert cache.get("k", lambda: calls.append(1) or "other") == "v"
    assert calls == [1]


def test_two_hundred_concurrent_visitors_cause_one_snapshot_per_tick(explorer, explorer_url):
    with ThreadPoolExecutor(max_workers=200) as pool:
        responses = list(pool.map(lambda _: get(f"{explorer_url}/api/v1/fleet"), range(200)))
    assert all(status == 200 for status, _, _ in responses)
    ticks = {body["as_of"] for _, body, _ in responses}
    hashes = {body["snapshot_sha256"] for _, body, _ in responses}
    assert len(hashes) == len(ticks)  # one hash per tick: every visitor saw the same object
    snapshots = [line for line in explorer.cache.computations() if line.split()[2].startswith("snapshot-")]
    assert len(snapshots) == len(ticks)


def test_a_cache_directory_others_can_write_to_is_refused(tmp_path):
    import pytest

    from fleetscope.errors import FleetscopeError

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(FleetscopeError, match="mode 0700"):
        SharedCache(shared / "db-1")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(elsewhere)
    with pytest.raises(FleetscopeError, match="not a link"):
        SharedCache(tmp_path / "link")


def test_an_unreadable_cache_file_is_a_miss(tmp_path):
    cache = SharedCache(tmp_path / "c")
    (tmp_path / "c" / "k.pickle").write_bytes(b"not a pickle")
    assert cache.get("k", lambda: "fresh") == "fresh"


def test_the_log_of_computations_is_rotated_at_its_size_and_one_generation_kept(tmp_path):
    cache = SharedCache(tmp_path / "cache", log_max_bytes=400)
    for i in range(60):
        cache.get(f"snapshot-{i}", lambda: i)
    log, kept = tmp_path / "cache" / "computed.log", tmp_path / "cache" / "computed.log.1"
    assert kept.exists() and log.stat().st_size <= 400 + 64 and kept.stat().st_size <= 400 + 64
    lines = cache.computations()
    assert [line.split()[2] for line in lines] == [f"snapshot-{i}" for i in range(60 - len(lines), 60)]
    assert 400 // 64 < len(lines) < 60, "the newest lines, not all of them"


def test_a_cache_directory_removed_under_a_running_dashboard_is_made_again(tmp_path):
    import shutil

    cache = SharedCache(tmp_path / "cache")
    shutil.rmtree(cache.directory)  # a tmp cleaner, or someone clearing the cache by hand
    assert cache.get("k", lambda: 42) == 42
    assert (cache.directory.stat().st_mode & 0o777) == 0o700
    assert cache.computations()[-1].endswith(" k")
