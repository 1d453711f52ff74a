"""The guest agent: runs inside a customer's VM, backs up and restores its databases and files."""
