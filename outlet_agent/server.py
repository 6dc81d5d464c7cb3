"""uvicorn's server with its housekeeping once a second instead of ten times.

uvicorn wakes every 100 ms to refresh its ``Date`` header (which changes once
a second) and to look for a stop request. One agent does not notice; a
hundred on one machine (the chain simulator) spent about a tenth of a core on
it. A stop request (SIGTERM, SIGINT) still wakes the loop at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import FrameType

import uvicorn

TICK_S = 1.0


class QuietServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = asyncio.Event()
        # counter 0 is the tick that refreshes the Date header (uvicorn: counter % 10)
        while not await self.on_tick(0):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_requested.wait(), TICK_S)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        loop, stop = self._loop, self._stop_requested
        if loop is not None and stop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stop.set)
