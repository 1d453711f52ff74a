"""What a guest agent's freeze says about an image backup's consistency: only a freeze of
something (databases, hooks) held through the snapshot makes the point application-consistent."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

from app.agent.guest_freeze import GuestFreeze
from app.agent.runtime import JobRuntime
from app.contracts.agent import QuiesceResult, QuiesceStatus
from tests.agent.test_file_restore_guest import assignment


def frozen(rt: JobRuntime) -> GuestFreeze:
    freeze = GuestFreeze.__new__(GuestFreeze)  # the decision alone; the channel is not used
    freeze.runtime = rt
    freeze.frozen = True
    freeze.froze_nothing = False
    return freeze


def status(engines: list[str], held: bool = True) -> QuiesceStatus:
    now = datetime.now(UTC)
    return QuiesceStatus(
        job_id=uuid.uuid4(),
        state="succeeded",
        frozen=False,
        result=QuiesceResult(frozen_at=now, thawed_at=now, held_until_release=held, engines=engines),
    )


def runtime(tmp_path: Path) -> JobRuntime:
    a = assignment(tmp_path, "00000000-0000-0000-0000-000000000001", [], None)
    return JobRuntime(assignment=a)


def test_a_freeze_of_nothing_does_not_make_the_point_application_consistent(tmp_path: Path) -> None:
    freeze = frozen(runtime(tmp_path))
    assert freeze._held(status([])) is False
    assert freeze.froze_nothing  # the snapshot's own quiescing decides instead


def test_a_held_freeze_of_databases_does(tmp_path: Path) -> None:
    freeze = frozen(runtime(tmp_path))
    assert freeze._held(status(["postgresql"])) is True and not freeze.froze_nothing
    assert frozen(runtime(tmp_path))._held(status(["postgresql"], held=False)) is False
