"""A loop that runs beside the collector's server, started and stopped by ``async with``.

The maintenance loop and the alert loop are both this shape: a task made on
entry and cancelled (and awaited) on exit, as aiohttp's cleanup contexts
expect. Subclasses define ``_loop`` and ``TASK_NAME``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self


class BackgroundLoop:
    TASK_NAME = "fleetscope-background"
    _task: asyncio.Task | None = None

    async def _loop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._loop(), name=self.TASK_NAME)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
