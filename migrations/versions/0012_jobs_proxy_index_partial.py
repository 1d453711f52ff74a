"""ix_jobs_proxy_id leaves out jobs without a proxy: the planner queues 10,000 at a time

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01 13:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_proxy_id")
        batch_op.create_index(
            "ix_jobs_proxy_id",
            ["proxy_id"],
            unique=False,
            postgresql_where=sa.text("proxy_id IS NOT NULL"),
            sqlite_where=sa.text("proxy_id IS NOT NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_proxy_id")
        batch_op.create_index("ix_jobs_proxy_id", ["proxy_id"], unique=False)
