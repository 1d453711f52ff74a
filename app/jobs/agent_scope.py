"""What an agent on the channel may learn about a job it names."""

from __future__ import annotations

from app.domain.jobs import AgentKind
from app.jobs.models import Job
from app.proxies.models import Proxy


def agent_may_know(agent: Proxy, job: Job) -> bool:
    """Whether ``agent`` may learn that ``job`` exists.

    A guest agent runs inside one tenant's VM and its token is the customer's to hold: a job of
    any other VM must look exactly like one that does not exist (404), not like one it lost
    (409), or the channel would confirm other tenants' job ids. Proxies are the provider's own
    agents and serve many tenants' hosts; they get the 409 that tells them to stop a job.
    """
    return agent.kind != AgentKind.GUEST.value or job.vm_id == agent.vm_id
