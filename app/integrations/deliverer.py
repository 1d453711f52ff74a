"""The loop that sends the outbox's messages: signed, retried with backoff for a day, in order.

Guarantees, and what gives them:

* **At least once.** A message stays ``pending`` until a receiver answered 2xx or its day is
  over. A sender that dies mid-flight leaves a lease that lapses; the message is then sent again.
* **Never twice at once.** A sender claims a message with compare-and-set on its attempt count
  (and ``FOR UPDATE SKIP LOCKED`` on PostgreSQL) and holds a lease longer than the request's
  timeout; only the holder of the current attempt records its outcome.
* **In order per subject.** Only the lowest pending message of an (integration, subject) may be
  claimed, so the next one waits until the previous one is delivered or failed for good, and at
  most one message per subject is ever in flight.

HTTP happens outside any transaction: claims and outcomes are short transactions of their own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import __version__
from app.clock import Clock
from app.crypto import SecretBox, SecretBoxError
from app.integrations.destinations import DestinationRefused, IPNetwork, pin
from app.integrations.repository import DeliveryRepository, DueDelivery
from app.integrations.signing import sign
from app.scheduler.loop import LoopService

log = logging.getLogger(__name__)

FIRST_RETRY = timedelta(seconds=10)
MAX_RETRY = timedelta(hours=1)
#: What a receiver's answer may add to the delivery log.
ERROR_BODY_BYTES = 300


def backoff(attempts: int) -> timedelta:
    """Wait after the ``attempts``-th failed attempt: 10 s, doubling, at most an hour."""
    doublings: int = min(max(attempts - 1, 0), 20)
    return min(MAX_RETRY, FIRST_RETRY * (1 << doublings))


def message_body(payload: dict[str, object]) -> bytes:
    """The bytes sent and signed; the same for every attempt (keys sorted: JSONB reorders them)."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class Claimed:
    delivery_id: uuid.UUID
    integration_id: uuid.UUID
    attempt: int
    attempt_since_resend: int  # the attempt's number since the message was (re)sent: the backoff's count
    message_id: str
    url: str
    secret_encrypted: bytes
    body: bytes
    expires_at: datetime


@dataclass(frozen=True)
class Outcome:
    claimed: Claimed
    ok: bool
    status: int | None
    error: str | None


class DeliveryLoop(LoopService):
    name = "webhook-deliverer"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        clock: Clock,
        box: SecretBox,
        interval_s: float = 2.0,
        *,
        timeout_s: float = 10.0,
        lease: timedelta = timedelta(seconds=60),
        batch: int = 20,
        concurrency: int = 10,
        max_rounds: int = 20,
        allowed_networks: Sequence[IPNetwork] = (),
    ) -> None:
        super().__init__(interval_s)
        #: Private networks messages may go to besides public addresses (see destinations.py).
        self.allowed_networks = tuple(allowed_networks)
        self.sessionmaker = sessionmaker
        self.clock = clock
        self.box = box
        self.timeout_s = timeout_s
        self.lease = lease
        self.batch = batch
        self.concurrency = concurrency
        self.max_rounds = max_rounds
        self.last_sent = 0
        self.last_failed = 0

    async def run_once(self) -> None:
        """Send everything sendable now: after a delivery the subject's next message is sendable
        at once, so rounds go on until nothing is left (bounded by ``max_rounds``)."""
        async with self.sessionmaker.begin() as session:
            expired = await DeliveryRepository(session).expire(self.clock.now())
        if expired:
            log.warning("webhooks: %d messages not delivered within a day; marked failed", expired)
        sent = failed = 0
        client: httpx.AsyncClient | None = None
        try:
            for _ in range(self.max_rounds):
                claimed = await self._claim()
                if not claimed:
                    break
                if client is None:
                    client = httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False)
                limit = asyncio.Semaphore(self.concurrency)
                outcomes = await asyncio.gather(*(self._send(client, c, limit) for c in claimed))
                await self._record(outcomes)
                sent += sum(1 for o in outcomes if o.ok)
                failed += sum(1 for o in outcomes if not o.ok)
        finally:
            if client is not None:
                await client.aclose()
        self.last_sent, self.last_failed = sent, failed

    async def _claim(self) -> list[Claimed]:
        now = self.clock.now()
        claimed = []
        async with self.sessionmaker.begin() as session:
            repo = DeliveryRepository(session)
            for due in await repo.due(now, self.batch):
                d = due.delivery
                if await repo.claim(d.id, d.attempts, now, now + self.lease):
                    claimed.append(self._claimed(due))
        return claimed

    @staticmethod
    def _claimed(due: DueDelivery) -> Claimed:
        d = due.delivery
        return Claimed(
            delivery_id=d.id,
            integration_id=d.integration_id,
            attempt=d.attempts + 1,
            attempt_since_resend=d.attempts + 1 - d.attempts_before_resend,
            message_id=d.message_id,
            url=due.url,
            secret_encrypted=due.secret_encrypted,
            body=message_body(d.payload),
            expires_at=d.expires_at,
        )

    async def _send(self, client: httpx.AsyncClient, claimed: Claimed, limit: asyncio.Semaphore) -> Outcome:
        """One message's attempt. Whatever goes wrong with it is its own failed attempt (with
        its backoff): an exception here would abort the batch, leave the messages that did
        arrive unrecorded (sent again at every lease expiry) and put this one first again."""
        try:
            return await self._attempt(client, claimed, limit)
        except Exception as exc:
            log.exception(
                "webhook %s to integration %s: unexpected error", claimed.message_id, claimed.integration_id
            )
            return Outcome(claimed, False, None, f"not sent: {type(exc).__name__}: {exc}"[:500])

    async def _attempt(
        self, client: httpx.AsyncClient, claimed: Claimed, limit: asyncio.Semaphore
    ) -> Outcome:
        async with limit:
            try:
                secret = self.box.decrypt(claimed.secret_encrypted).decode()
            except SecretBoxError as exc:
                return Outcome(claimed, False, None, f"the integration's secret cannot be used: {exc}")
            headers = {
                **sign(secret, claimed.message_id, self.clock.now(), claimed.body),
                "content-type": "application/json",
                "user-agent": f"vm-recovery/{__version__}",
            }
            try:
                target = await pin(claimed.url, self.allowed_networks)
            except DestinationRefused as exc:
                return Outcome(claimed, False, None, f"not sent: {exc}")
            try:
                async with client.stream(
                    "POST",
                    target.url,
                    content=claimed.body,
                    headers={**headers, **target.headers},
                    extensions=target.extensions,
                ) as response:
                    if 200 <= response.status_code < 300:
                        return Outcome(claimed, True, response.status_code, None)
                    head = b""
                    async for chunk in response.aiter_bytes():
                        head += chunk
                        if len(head) >= ERROR_BODY_BYTES:
                            break
                    text = head[:ERROR_BODY_BYTES].decode(errors="replace").strip()
                    error = f"HTTP {response.status_code}" + (f": {text}" if text else "")
                    return Outcome(claimed, False, response.status_code, error)
            except httpx.HTTPError as exc:
                return Outcome(
                    claimed, False, None, f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__
                )

    async def _record(self, outcomes: list[Outcome]) -> None:
        now = self.clock.now()
        async with self.sessionmaker.begin() as session:
            repo = DeliveryRepository(session)
            for outcome in outcomes:
                c = outcome.claimed
                values: dict[str, object] = {"last_status": outcome.status, "last_error": outcome.error}
                if outcome.ok:
                    values.update(state="delivered", delivered_at=now)
                elif now >= c.expires_at:
                    values.update(state="failed")
                    log.warning(
                        "webhook %s to integration %s failed for good after %d attempts: %s",
                        c.message_id,
                        c.integration_id,
                        c.attempt,
                        outcome.error,
                    )
                else:
                    values.update(next_attempt_at=min(now + backoff(c.attempt_since_resend), c.expires_at))
                    log.info(
                        "webhook %s to integration %s failed (attempt %d), retrying: %s",
                        c.message_id,
                        c.integration_id,
                        c.attempt,
                        outcome.error,
                    )
                await repo.finish(c.delivery_id, c.attempt, values)
