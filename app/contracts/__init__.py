"""Wire models shared by the service and its agents (proxies, guest agents).

Only stdlib and pydantic: agents import these without pulling in the server.
"""
