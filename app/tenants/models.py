from __future__ import annotations

from sqlalchemy import String, true
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, IdMixin, TimestampMixin


class Tenant(IdMixin, TimestampMixin, Base):
    """A customer of the provider; owns vCenters, policies and customer keys."""

    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(200), unique=True)
    # Restores that overwrite an existing VM wait for an operator's approval unless this is off.
    restore_approval_required: Mapped[bool] = mapped_column(default=True, server_default=true())
