"""Guest agents: registration of the agent that runs inside a customer's VM, and its token."""
