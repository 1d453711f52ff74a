"""Base classes for request and response schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict

#: Years an instant given to the API may fall in: wide enough for any real question, narrow
#: enough that arithmetic on it (a period before it, a conversion to UTC) cannot overflow.
INSTANT_YEARS = (1900, 9000)


def _instant_in_range(value: datetime) -> datetime:
    low, high = INSTANT_YEARS
    if not low <= value.year <= high:
        raise ValueError(f"give an instant between the years {low} and {high}")
    return value


#: An instant with its timezone (e.g. ``2026-01-01T00:00:00Z``); naive times are ambiguous.
Instant = Annotated[AwareDatetime, AfterValidator(_instant_in_range)]


class InputModel(BaseModel):
    """Request bodies reject unknown fields: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class OutputModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)
