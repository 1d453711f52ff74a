"""What the background loops of all replicas share in the catalog."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base


class MaintenanceRun(Base):
    """The last start of a periodic job that one replica runs for all (a repository's garbage
    collection): whoever moves ``started_at`` forward runs it, the others wait for the next."""

    __tablename__ = "maintenance_runs"

    name: Mapped[str] = mapped_column(String(60), primary_key=True)
    started_at: Mapped[datetime | None] = mapped_column()
