"""The station-side tables that sync owns, as a second sqlite-utils migrations set.

Call ``migrate(path)`` after ``kiosk.core.db.migrate(path)``.
"""
from pathlib import Path

import sqlite_utils
from sqlite_utils.migrations import Migrations

migrations = Migrations("dvc-kiosk-sync")


@migrations()
def m001_sync_tables(db: sqlite_utils.Database):
    # The central's signed acknowledgement, kept as proof for reconciliation after the payload is purged.
    db.execute(
        """
        CREATE TABLE sync_acks (
            submission_id TEXT PRIMARY KEY REFERENCES dossiers(submission_id),
            central_code TEXT NOT NULL,
            acknowledged_at TEXT NOT NULL,           -- here, UTC: the purge clock starts then
            via TEXT NOT NULL,                       -- online | bundle
            ack TEXT NOT NULL                        -- the signed envelope, as received
        )
        """
    )
    db.execute("CREATE TABLE sync_state (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
    # USB bundles: which dossiers went out in which bundle. A bundled dossier stays pending in the outbox
    # until an acknowledgement comes back (online or in an ack file), so a lost stick loses nothing.
    db.execute(
        """
        CREATE TABLE sync_bundles (
            bundle_id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            file_name TEXT NOT NULL,
            dossiers INTEGER NOT NULL
        )
        """
    )
    db.execute(
        """
        CREATE TABLE sync_bundle_items (
            bundle_id TEXT NOT NULL REFERENCES sync_bundles(bundle_id),
            submission_id TEXT NOT NULL REFERENCES dossiers(submission_id),
            PRIMARY KEY (bundle_id, submission_id)
        )
        """
    )
    db.execute("CREATE INDEX sync_bundle_items_dossier ON sync_bundle_items(submission_id)")


@migrations()
def m002_central_restores(db: sqlite_utils.Database):
    # Which store of the central (its id and generation) gave each acknowledgement: after the central is
    # restored from a backup, what an older generation acknowledged is sent again.
    db.execute("ALTER TABLE sync_acks ADD COLUMN store TEXT")
    # Dossiers the central acknowledged, then lost in a restore, after this station had already purged
    # their payload: nothing can resend them, staff must (shown on the staff pages and in sync status).
    db.execute(
        """
        CREATE TABLE sync_lost (
            submission_id TEXT PRIMARY KEY REFERENCES dossiers(submission_id),
            found_at TEXT NOT NULL
        )
        """
    )


@migrations()
def m003_deferred_at(db: sqlite_utils.Database):
    # When a row was put back to wait (this station's clock then): a row deferred "in the future" of the
    # clock now was deferred before the clock was corrected backwards, and is due at once.
    db.execute("ALTER TABLE outbox ADD COLUMN deferred_at TEXT")


def migrate(path: str | Path) -> None:
    from kiosk.core.db import migrate as apply_migrations

    apply_migrations(path, migrations)
