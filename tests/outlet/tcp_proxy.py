"""A loopback TCP proxy the test controls, to cut the agent's link to the broker."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from devstack.process import free_port


@dataclass
class TcpProxy:
    """Forwards ``listen_port`` to ``target_port``; ``cut()`` blackholes it, ``restore()`` heals.

    A cut link accepts connections and swallows bytes without forwarding or
    answering (what a dead WAN looks like: no RST, only timeouts); restoring drops
    the stale connections so clients reconnect through a working path.
    """

    target_port: int
    listen_port: int = 0
    host: str = "127.0.0.1"
    connections: int = 0
    _server: asyncio.Server | None = None
    _up: asyncio.Event = field(default_factory=asyncio.Event)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self.listen_port = self.listen_port or free_port(self.host)
        self._up.set()
        self._server = await asyncio.start_server(self._handle, self.host, self.listen_port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._drop_all()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()

    def cut(self) -> None:
        self._up.clear()

    def restore(self) -> None:
        self._drop_all()
        self._up.set()

    def _drop_all(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._tasks.discard)
        try:
            await self._up.wait()  # a cut link holds new connections in silence
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        await asyncio.gather(
            self._pipe(reader, up_writer, writer), self._pipe(up_reader, writer, up_writer)
        )

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, src_writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                data = await src.read(65536)
                if not data:
                    break
                if not self._up.is_set():
                    continue  # blackholed: swallow the bytes
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (dst, src_writer):
                with contextlib.suppress(OSError, RuntimeError):
                    w.close()
