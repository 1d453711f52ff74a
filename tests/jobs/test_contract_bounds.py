"""Counts an agent reports must fit the catalog's 64-bit columns, even summed over a point's
disks: a larger number is the agent's error (422), not the service's (500)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.contracts.agent import COUNT_MAX, DiskResult, ProgressReport


def test_a_count_past_the_bound_is_refused() -> None:
    assert ProgressReport(phase="reading", bytes_read=COUNT_MAX).bytes_read == COUNT_MAX
    with pytest.raises(ValidationError):
        ProgressReport(phase="reading", bytes_read=2**63)
    with pytest.raises(ValidationError):
        DiskResult(key=2000, label="Hard disk 1", size=COUNT_MAX + 1)


def test_a_thousand_counts_at_the_bound_still_fit_a_64_bit_sum() -> None:
    assert 1024 * COUNT_MAX < 2**63  # a VM has at most a few hundred disks
