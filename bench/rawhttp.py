"""A minimal HTTP/1.1 client for the benchmarks' open-loop load generators.

The generators share the 2 cores with the server and PostgreSQL. httpx costs 3-5 ms of CPU per
request here, and under overload (hundreds of requests waiting for a connection) its pool costs
11-15 ms, as much as the server it measures; this client costs a fraction of that. It speaks only
what ``serve`` answers: kept-alive connections, one request at a time on each, responses with a
``content-length``.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit


class RawClient:
    """Kept-alive loopback connections to one server; a new one when all are busy, up to
    ``max_connections`` (then requests wait for one, as they would in a client's pool)."""

    #: Connections idle longer than this are not reused (uvicorn closes them after 5 s).
    KEEP_IDLE_S = 3.0

    def __init__(self, url: str, max_connections: int | None = None) -> None:
        parsed = urlsplit(url)
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.slots = asyncio.Semaphore(max_connections) if max_connections else None

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        now = time.monotonic()
        while self.idle:
            reader, writer, since = self.idle.pop()
            if now - since < self.KEEP_IDLE_S and not reader.at_eof():
                return reader, writer, True
            writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return reader, writer, False

    async def request(
        self, method: str, target: str, headers: dict[str, str], body: bytes = b""
    ) -> tuple[int, bytes]:
        """Status and body of one request; ``target`` is the path with its query string."""
        if self.slots is None:
            return await self._request(method, target, headers, body)
        async with self.slots:
            return await self._request(method, target, headers, body)

    async def _request(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        lines = [f"{method} {target} HTTP/1.1", f"host: {self.host}:{self.port}"]
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"content-length: {len(body)}")
        request = ("\r\n".join(lines + [f"{k}: {v}" for k, v in headers.items()]) + "\r\n\r\n").encode()
        for _ in range(2):
            reader, writer, reused = await self._connection()
            try:
                writer.write(request + body)
                head = await reader.readuntil(b"\r\n\r\n")
            except (ConnectionError, asyncio.IncompleteReadError):
                writer.close()
                if reused:
                    continue  # the server closed the kept-alive connection first: a new one
                raise
            except BaseException:
                writer.close()  # cancelled (a caller's timeout) mid-request: out of step, not reused
                raise
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            try:
                payload = await reader.readexactly(length) if length else b""
            except BaseException:
                writer.close()
                raise
            self.idle.append((reader, writer, time.monotonic()))
            return status, payload
        raise ConnectionError("no connection to the server")

    async def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()


class Replicas:
    """Round-robin over the replicas' clients (a load balancer's simplest policy)."""

    def __init__(self, urls: list[str], max_connections: int | None = None) -> None:
        self.clients = [RawClient(u, max_connections) for u in urls]
        self.turn = 0

    def next(self) -> RawClient:
        self.turn = (self.turn + 1) % len(self.clients)
        return self.clients[self.turn]

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
