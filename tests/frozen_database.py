"""Freezing a test's own PostgreSQL server (SIGSTOP), as a hung database host looks to the collector.

Every process of the server, the postmaster and its backends, is stopped, so
open connections stop answering and new ones hang in their start-up, exactly
as with the issue-15 report's ``kill -STOP``. Helpers only; no tests here.
"""

from __future__ import annotations

import contextlib
import signal
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fleetscope.embedded import EmbeddedServer


def server_processes(server: EmbeddedServer) -> list[psutil.Process]:
    pid = int((server.pgdata / "postmaster.pid").read_text().splitlines()[0])
    postmaster = psutil.Process(pid)
    return [postmaster, *postmaster.children(recursive=True)]


@contextlib.contextmanager
def frozen(server: EmbeddedServer) -> Iterator[None]:
    """The server stopped (SIGSTOP) inside the block, continued (SIGCONT) after it, whatever happens."""
    processes = server_processes(server)
    try:
        for process in processes:
            process.send_signal(signal.SIGSTOP)
        yield
    finally:
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGCONT)
