"""ix_jobs_tenant_created gains id: a tenant's job list is read from the index in its order

A planning tick queues thousands of jobs with one created_at; a page ordered by (created_at, id)
then sorted all of them on every request when the index stopped at created_at.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 13:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_tenant_created")
        batch_op.create_index("ix_jobs_tenant_created", ["tenant_id", "created_at", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_tenant_created")
        batch_op.create_index("ix_jobs_tenant_created", ["tenant_id", "created_at"], unique=False)
