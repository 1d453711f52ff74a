"""Group commit for audit rows: the requests that end while a write is in flight share the next one.

Every mutating request adds a row to the audit log after its response has gone out. Written one
by one, each row cost its own pool checkout, transaction and ORM flush: about 1.3 ms of the
server's CPU per ticket webhook, an eighth of what the whole ticket cost (docs/benchmarks.md). Here a
request hands its entry over and waits until the entry is committed (so that the ASGI call still
ends with the row durable, as callers and tests rely on); one flusher task at a time takes every
entry waiting, inserts them with one statement in one transaction, and wakes their requests.
Under load the batches grow by themselves; alone, a request's row is written at once.

A failed write fails every request of its batch's wait (each logs and counts it, as before);
the requests themselves have already been answered.
"""

from __future__ import annotations

import asyncio

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.audit.schemas import AuditEntry
from app.audit.service import AuditService

#: Rows per INSERT at most (a backlog after a stall goes in several transactions).
MAX_BATCH = 500
WRITE_TIMEOUT_S = 10.0

_Waiting = tuple[AuditEntry, "asyncio.Future[None]"]


class AuditWriter:
    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], timeout_s: float = WRITE_TIMEOUT_S
    ) -> None:
        self._sessionmaker = sessionmaker
        self._timeout_s = timeout_s
        self._pending: list[_Waiting] = []
        self._flusher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def write(self, entry: AuditEntry) -> None:
        """Return once the entry's row is committed; raise what its batch's write raised."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests, a restarted server): start afresh
            self._loop, self._pending, self._flusher = loop, [], None
        written: asyncio.Future[None] = loop.create_future()
        self._pending.append((entry, written))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush(), name="audit-writer")
        await written

    async def _flush(self) -> None:
        while self._pending:
            batch = self._pending[:MAX_BATCH]
            del self._pending[:MAX_BATCH]
            try:
                async with asyncio.timeout(self._timeout_s), self._sessionmaker.begin() as session:
                    await AuditService(session).record_many([entry for entry, _ in batch])
            except Exception as exc:  # each request of the batch logs it with its own details
                _settle(batch, exc)
            except BaseException:  # cancelled (the loop is shutting down): nobody waits forever
                _settle(batch + self._pending, RuntimeError("the audit writer was stopped"))
                self._pending = []
                raise
            else:
                _settle(batch, None)


def _settle(batch: list[_Waiting], error: BaseException | None) -> None:
    for _, written in batch:
        if written.done():  # its request was cancelled meanwhile
            continue
        if error is None:
            written.set_result(None)
        else:
            written.set_exception(error)
