"""Agents: the proxy (image backups and restores) and, later, the guest agent.

Agents reach the service only over HTTP (the agent channel) and never import the server's
database, API or services: they could run on another machine, and usually do.
"""
