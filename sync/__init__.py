"""The outbox of submitted dossiers, the sync client, and the reference central server."""
