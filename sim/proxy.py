"""A loopback Kafka proxy that can cut one outlet's link to the broker.

Tansu advertises one listener address, so every client (outlet agents, workers,
the simulator) reaches the broker through this proxy. Each connection is named
by the ``client_id`` of its first Kafka request (the outlet forwarder uses
``outlet-{store_id}``), so one proxy can blackhole a single store's link while
everyone else keeps talking: a cut link accepts connections and swallows bytes
without answering (a dead WAN: no RST, only timeouts), and restoring it drops
the stale connections so the client reconnects through a working path.

Run as ``python -m sim.proxy --listen P --target T``; commands on stdin, one a
line: ``cut <client_id>``, ``restore <client_id>``, ``restore-all``. It answers
``ok`` on stdout after each command, so the controller knows it took effect.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import struct
import sys
from dataclasses import dataclass, field

_HEADER = struct.Struct(">ihhih")  # size, api_key, api_version, correlation_id, client_id len


@dataclass(eq=False)
class _Conn:
    client_id: str
    writers: tuple[asyncio.StreamWriter, ...] = ()


@dataclass
class KafkaProxy:
    target_port: int
    listen_port: int
    host: str = "127.0.0.1"
    cut_ids: set[str] = field(default_factory=set)
    conns: set[_Conn] = field(default_factory=set)
    released: dict[str, asyncio.Event] = field(default_factory=dict)

    def is_cut(self, client_id: str) -> bool:
        return client_id in self.cut_ids

    def cut(self, client_id: str) -> None:
        self.cut_ids.add(client_id)
        self.released.setdefault(client_id, asyncio.Event()).clear()

    def restore(self, client_id: str) -> None:
        self.cut_ids.discard(client_id)
        for conn in [c for c in self.conns if c.client_id == client_id]:
            self._drop(conn)
        self.released.setdefault(client_id, asyncio.Event()).set()

    def _drop(self, conn: _Conn) -> None:
        for w in conn.writers:
            with contextlib.suppress(OSError, RuntimeError):
                w.close()
        self.conns.discard(conn)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readexactly(_HEADER.size)
            _size, _key, _ver, _corr, id_len = _HEADER.unpack(head)
            raw_id = await reader.readexactly(id_len) if id_len > 0 else b""
        except (OSError, asyncio.IncompleteReadError):
            writer.close()
            return
        client_id = raw_id.decode("utf-8", "replace")
        conn = _Conn(client_id)
        self.conns.add(conn)
        if self.is_cut(client_id):
            # a cut link holds the connection in silence until it is restored
            await self._swallow(reader, conn, writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            self.conns.discard(conn)
            writer.close()
            return
        conn.writers = (writer, up_writer)
        up_writer.write(head + raw_id)
        await asyncio.gather(
            self._pipe(reader, up_writer, conn), self._pipe(up_reader, writer, conn)
        )
        self._drop(conn)

    async def _swallow(
        self, reader: asyncio.StreamReader, conn: _Conn, writer: asyncio.StreamWriter
    ) -> None:
        conn.writers = (writer,)
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while await reader.read(65536):
                pass
        self._drop(conn)

    async def _pipe(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, conn: _Conn
    ) -> None:
        try:
            while True:
                data = await src.read(65536)
                if not data:
                    break
                if self.is_cut(conn.client_id):
                    continue  # blackholed: swallow the bytes
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._drop(conn)

    async def serve(self) -> None:
        server = await asyncio.start_server(self.handle, self.host, self.listen_port)
        loop = asyncio.get_running_loop()
        stdin = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        sys.stdout.write("ready\n")
        sys.stdout.flush()
        async with server:
            while True:
                line = await stdin.readline()
                if not line:
                    return  # the controller went away: so do we
                cmd, _, arg = line.decode().strip().partition(" ")
                if cmd == "cut":
                    self.cut(arg)
                elif cmd == "restore":
                    self.restore(arg)
                elif cmd == "restore-all":
                    for cid in list(self.cut_ids):
                        self.restore(cid)
                sys.stdout.write("ok\n")
                sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sim.proxy")
    parser.add_argument("--listen", type=int, required=True)
    parser.add_argument("--target", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency
        pass
    asyncio.run(KafkaProxy(args.target, args.listen).serve())


if __name__ == "__main__":
    main()
