from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integrations.support import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A real HTTP receiver for outbound messages, on a free loopback port."""
    server = Receiver()
    yield server
    server.stop()
