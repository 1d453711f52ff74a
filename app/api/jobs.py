from __future__ import annotations

import uuid

from fastapi import status

from app.api.deps import Ctx, CurrentPrincipal, Pagination, Session
from app.api.openapi import AUTH_ERRORS, CONFLICT, NOT_FOUND
from app.api.routing import PrefixRouter
from app.domain.jobs import JobKind, JobState
from app.jobs.progress import job_read
from app.jobs.repository import JobFilter
from app.jobs.schemas import JobCreate, JobRead
from app.jobs.service import JobService
from app.pagination import Page

router = PrefixRouter(prefix="/jobs", tags=["jobs"], responses=AUTH_ERRORS)


@router.get("", response_model=Page[JobRead], summary="Backup and restore jobs, newest first")
async def list_jobs(
    ctx: Ctx,
    session: Session,
    principal: CurrentPrincipal,
    page: Pagination,
    tenant_id: uuid.UUID | None = None,
    vm_id: uuid.UUID | None = None,
    policy_id: uuid.UUID | None = None,
    kind: JobKind | None = None,
    state: JobState | None = None,
) -> Page[JobRead]:
    f = JobFilter(
        tenant_id=tenant_id,
        vm_id=vm_id,
        policy_id=policy_id,
        kind=kind.value if kind else None,
        state=state.value if state else None,
    )
    items, total = await JobService(session, ctx.clock).list_page(principal, f, page)
    now = ctx.clock.now()
    return Page.of([job_read(j, now) for j in items], total, page)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=list[JobRead],
    summary="Back up VMs now (operators); a VM with a backup already queued or running gets that job",
)
async def create_jobs(
    ctx: Ctx, session: Session, principal: CurrentPrincipal, body: JobCreate
) -> list[JobRead]:
    jobs = await JobService(session, ctx.clock).enqueue_backups(
        principal, body.vm_ids, kind=JobKind(body.kind)
    )
    now = ctx.clock.now()
    return [job_read(j, now) for j in jobs]


@router.get("/{job_id}", response_model=JobRead, responses=NOT_FOUND, summary="A job with its progress")
async def get_job(ctx: Ctx, session: Session, principal: CurrentPrincipal, job_id: uuid.UUID) -> JobRead:
    return job_read(await JobService(session, ctx.clock).get(principal, job_id), ctx.clock.now())


@router.post(
    "/{job_id}/cancel",
    response_model=JobRead,
    responses={**NOT_FOUND, **CONFLICT},
    summary="Cancel a job (operators); a running one stops at its next progress report",
)
async def cancel_job(ctx: Ctx, session: Session, principal: CurrentPrincipal, job_id: uuid.UUID) -> JobRead:
    return job_read(await JobService(session, ctx.clock).cancel(principal, job_id), ctx.clock.now())
