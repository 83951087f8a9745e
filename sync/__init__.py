"""Sync: the worker and client that send the outbox to the central, USB bundles, and the reference central
server with its storage. Uses the core (kiosk/core) and nothing else of the project."""
