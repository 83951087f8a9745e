"""The station database's schema: one sqlite-utils migration set, applied by ``kiosk.core.db.migrate``.

Every table of the station is made here, whichever module owns it (docs/architecture.md, "who owns which
table"). Releases before this one kept sync's tables in a second set, "dvc-kiosk-sync" (sync/schema.py);
its three migrations are m005..m007 below with the same SQL, and ``adopt_previous_sets`` records them
under their new names, so a database made by such a release migrates without running any of them again.
"""
import sqlite3

import sqlite_utils
from sqlite_utils.migrations import Migrations

migrations = Migrations("dvc-kiosk")


def _dossier_columns_immutable(db: sqlite_utils.Database, added: str) -> None:
    """Make the dossier's trigger refuse changes to the first columns and to ``added`` (columns a
    migration adds to what a submitted dossier is)."""
    db.execute("DROP TRIGGER dossiers_immutable")
    db.execute(
        f"""
        CREATE TRIGGER dossiers_immutable BEFORE UPDATE OF
            submission_id, tracking_code, station_id, channel, procedure_code, procedure_slug,
            procedure_version, submitted_at, payload_sha256, supersedes, {added}
        ON dossiers BEGIN SELECT RAISE(ABORT, 'submitted dossiers are immutable'); END
        """
    )


@migrations()
def m001_dossiers(db: sqlite_utils.Database):
    db.execute(
        """
        CREATE TABLE dossiers (
            submission_id TEXT PRIMARY KEY,          -- UUID made here at submit: the sync idempotency key
            tracking_code TEXT NOT NULL UNIQUE,
            station_id TEXT NOT NULL,
            channel TEXT NOT NULL,                   -- kiosk | counter | mobile
            procedure_code TEXT NOT NULL,
            procedure_slug TEXT NOT NULL,
            procedure_version TEXT NOT NULL,
            submitted_at TEXT NOT NULL,              -- UTC, ISO 8601
            payload_sealed BLOB,                     -- answers, encrypted; NULL once purged
            payload_sha256 TEXT NOT NULL,            -- of the canonical plaintext: the content hash for sync
            supersedes TEXT REFERENCES dossiers(submission_id),
            central_code TEXT,                       -- mã hồ sơ, once the central acknowledges
            status TEXT NOT NULL DEFAULT 'queued'
        )
        """
    )
    # A submitted dossier is immutable: only the fields that sync and purge own may change.
    db.execute(
        """
        CREATE TRIGGER dossiers_immutable BEFORE UPDATE OF
            submission_id, tracking_code, station_id, channel, procedure_code, procedure_slug,
            procedure_version, submitted_at, payload_sha256, supersedes
        ON dossiers BEGIN SELECT RAISE(ABORT, 'submitted dossiers are immutable'); END
        """
    )
    db.execute("CREATE INDEX dossiers_tracking_compact ON dossiers(replace(tracking_code, '-', ''))")
    db.execute(
        """
        CREATE TABLE outbox (
            submission_id TEXT PRIMARY KEY REFERENCES dossiers(submission_id),
            state TEXT NOT NULL DEFAULT 'pending',   -- pending | sent | rejected
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT,
            last_error TEXT,
            enqueued_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX outbox_pending ON outbox(state, next_attempt_at)")
    db.execute(
        """
        CREATE TABLE audit_events (
            seq INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            subject TEXT,
            detail TEXT NOT NULL DEFAULT '{}',
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        )
        """
    )
    # Append-only: the hash chain detects edits, these triggers stop the easy ones.
    db.execute(
        "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END"
    )
    db.execute(
        "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit_events "
        "BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END"
    )
    db.execute("CREATE TABLE daily_sequence (day TEXT PRIMARY KEY, last INTEGER NOT NULL)")
    db.execute(
        """
        CREATE TABLE drafts (
            id TEXT PRIMARY KEY,
            procedure_slug TEXT NOT NULL,
            procedure_version TEXT NOT NULL,
            answers_sealed BLOB NOT NULL,
            created_at TEXT NOT NULL,
            touched_at TEXT NOT NULL
        )
        """
    )


@migrations()
def m002_receipt_prints(db: sqlite_utils.Database):
    # Every attempt to print a receipt, first print and reprints alike: the counter's ledger counts them.
    db.execute(
        """
        CREATE TABLE receipt_prints (
            id INTEGER PRIMARY KEY,
            submission_id TEXT NOT NULL REFERENCES dossiers(submission_id),
            requested_at TEXT NOT NULL,
            requested_by TEXT NOT NULL,            -- citizen, or the staff member who reprinted
            finished_at TEXT,
            status TEXT NOT NULL DEFAULT 'pending', -- pending, or the printer's status code when done
            ok INTEGER
        )
        """
    )
    db.execute("CREATE INDEX receipt_prints_dossier ON receipt_prints(submission_id, id)")


@migrations()
def m003_counter(db: sqlite_utils.Database):
    # Staff of counter and mobile stations. PINs are argon2 hashes; lockout after repeated failures.
    db.execute(
        """
        CREATE TABLE staff (
            id INTEGER PRIMARY KEY,
            username TEXT NOT NULL UNIQUE,
            display_name TEXT NOT NULL,
            role TEXT NOT NULL CHECK (role IN ('agent', 'supervisor')),
            secret_hash TEXT NOT NULL,
            failed_logins INTEGER NOT NULL DEFAULT 0,
            locked_until TEXT,
            active INTEGER NOT NULL DEFAULT 1,
            created_at TEXT NOT NULL
        )
        """
    )
    # Money and reprints at the counter: every fee taken and every reprint, one row each.
    db.execute(
        """
        CREATE TABLE ledger (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            local_day TEXT NOT NULL,
            staff_id INTEGER NOT NULL REFERENCES staff(id),
            kind TEXT NOT NULL CHECK (kind IN ('fee', 'reprint')),
            submission_id TEXT NOT NULL REFERENCES dossiers(submission_id),
            amount_vnd INTEGER NOT NULL DEFAULT 0
        )
        """
    )
    db.execute("CREATE INDEX ledger_day ON ledger(local_day, staff_id)")
    db.execute(
        """
        CREATE TABLE day_closings (
            id INTEGER PRIMARY KEY,
            local_day TEXT NOT NULL UNIQUE,
            report TEXT NOT NULL,
            report_sha256 TEXT NOT NULL,
            signed_by INTEGER NOT NULL REFERENCES staff(id),
            signed_at TEXT NOT NULL
        )
        """
    )
    # Who submitted (NULL for the citizen at a kiosk), the local day, the fee due, and the applicant's
    # masked name for staff search (the full name stays sealed in the payload).
    db.execute("ALTER TABLE dossiers ADD COLUMN staff_id INTEGER REFERENCES staff(id)")
    db.execute("ALTER TABLE dossiers ADD COLUMN local_day TEXT")
    db.execute("ALTER TABLE dossiers ADD COLUMN fee_due_vnd INTEGER NOT NULL DEFAULT 0")
    db.execute("ALTER TABLE dossiers ADD COLUMN applicant_masked TEXT")
    db.execute("CREATE INDEX dossiers_day ON dossiers(local_day, staff_id)")
    _dossier_columns_immutable(db, "staff_id, local_day, fee_due_vnd, applicant_masked")


@migrations()
def m004_incarnations(db: sqlite_utils.Database):
    # Each restore from a backup (and each reinstall found out by the central) starts a new incarnation of
    # the station; tracking codes carry it, so codes issued after the backup was taken are never issued
    # again. The first life of a station is incarnation 0 and has no row.
    db.execute(
        """
        CREATE TABLE incarnations (
            n INTEGER PRIMARY KEY,
            started_at TEXT NOT NULL,               -- UTC
            reason TEXT NOT NULL                    -- restore | tracking_code_taken | ...
        )
        """
    )


@migrations()
def m005_sync_tables(db: sqlite_utils.Database):
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
def m006_central_restores(db: sqlite_utils.Database):
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
def m007_deferred_at(db: sqlite_utils.Database):
    # When a row was put back to wait (this station's clock then): a row deferred "in the future" of the
    # clock now was deferred before the clock was corrected backwards, and is due at once.
    db.execute("ALTER TABLE outbox ADD COLUMN deferred_at TEXT")


@migrations()
def m008_staff_sessions(db: sqlite_utils.Database):
    # Staff sessions are held here, not in the cookie: the cookie carries only a random id, and only the
    # id's sha256 is stored. Every staff request looks its row up (agent/staff.py), so a logout, an idle or
    # too old session, a deactivated account or a changed role ends it on the next request.
    db.execute(
        """
        CREATE TABLE staff_sessions (
            id_sha256 TEXT PRIMARY KEY,              -- hex sha256 of the cookie's random id
            staff_id INTEGER NOT NULL REFERENCES staff(id),
            role TEXT NOT NULL,                      -- the account's role at login: another role now ends it
            created_at TEXT NOT NULL,                -- UTC, ISO 8601: the absolute lifetime counts from here
            last_seen_at TEXT NOT NULL,              -- UTC, written at most every few seconds: the idle limit
            ended_at TEXT,                           -- UTC; NULL while open
            end_reason TEXT                          -- logout | idle | expired | deactivated | role_changed | replaced
        )
        """
    )
    db.execute("CREATE INDEX staff_sessions_staff ON staff_sessions(staff_id, ended_at)")


# The previous release's second set: what each of its migrations is called here.
PREVIOUS_SETS = {
    ("dvc-kiosk-sync", "m001_sync_tables"): "m005_sync_tables",
    ("dvc-kiosk-sync", "m002_central_restores"): "m006_central_restores",
    ("dvc-kiosk-sync", "m003_deferred_at"): "m007_deferred_at",
}


def adopt_previous_sets(conn: sqlite3.Connection) -> int:
    """Record what the previous release applied of its sync set as applied here under the new names (its
    time kept), inside the caller's transaction, before ``migrations.apply``; returns how many it renamed.
    A fresh database has no record yet, and one already adopted has nothing left to rename."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                    (Migrations.migrations_table,)).fetchone() is None:
        return 0
    renamed = 0
    for (old_set, old_name), name in PREVIOUS_SETS.items():
        renamed += conn.execute("UPDATE _sqlite_migrations SET migration_set = ?, name = ? "
                                "WHERE migration_set = ? AND name = ?",
                                (migrations.name, name, old_set, old_name)).rowcount
    return renamed


@migrations()
def m009_fee_basis(db: sqlite_utils.Database):
    # How the fee due was worked out (kiosk/core/fees.py, as JSON: the rate, the lines, the reduction's or
    # exemption's ground and legal reason, who decided it), beside ``fee_due_vnd``: the receipt, the done
    # page and the staff pages say why the amount is what it is. NULL for dossiers made before.
    db.execute("ALTER TABLE dossiers ADD COLUMN fee_basis TEXT")
    _dossier_columns_immutable(db, "staff_id, local_day, fee_due_vnd, applicant_masked, fee_basis")


@migrations()
def m010_receipt_request_keys(db: sqlite_utils.Database):
    # A staff reprint carries a random key from its form: a replayed or double-clicked request finds its key
    # taken and prints nothing more (kiosk/receipts.py record_request). Older requests have none.
    db.execute("ALTER TABLE receipt_prints ADD COLUMN request_key TEXT")
    db.execute("CREATE UNIQUE INDEX receipt_prints_request_key ON receipt_prints(request_key) "
               "WHERE request_key IS NOT NULL")


@migrations()
def m011_documents(db: sqlite_utils.Database):
    # The papers of a dossier (kiosk/core/documents.py). A draft's pages, each sealed and bound to its row,
    # written one by one as they are captured (a crash loses at most the page being scanned) and deleted
    # with their draft; at submit, one PDF per document, sealed, kept with the dossier until the central
    # has it and the dossier is purged.
    db.execute(
        """
        CREATE TABLE draft_pages (
            id INTEGER PRIMARY KEY,
            draft_id TEXT NOT NULL,
            document_id TEXT NOT NULL,               -- the procedure's [[documents]] id
            position INTEGER NOT NULL,               -- order within the document
            page_sealed BLOB NOT NULL,               -- the clean page (kiosk/core/pages.py), sealed
            media_type TEXT NOT NULL,
            mode TEXT NOT NULL,                      -- gray | bilevel
            dpi INTEGER NOT NULL,
            quarter_turns INTEGER NOT NULL DEFAULT 0,  -- turned clockwise by the citizen or clerk
            size_bytes INTEGER NOT NULL,
            source TEXT NOT NULL,                    -- scanner | camera | file
            added_at TEXT NOT NULL
        )
        """
    )
    db.execute("CREATE INDEX draft_pages_draft ON draft_pages(draft_id, document_id, position)")
    db.execute("CREATE TRIGGER draft_pages_follow_draft AFTER DELETE ON drafts "
               "BEGIN DELETE FROM draft_pages WHERE draft_id = OLD.id; END")
    db.execute(
        """
        CREATE TABLE dossier_documents (
            submission_id TEXT NOT NULL REFERENCES dossiers(submission_id),
            document_id TEXT NOT NULL,
            position INTEGER NOT NULL,               -- order in the procedure's list
            sha256 TEXT NOT NULL,                    -- of the PDF: the blob's name at the central
            size_bytes INTEGER NOT NULL,
            pages INTEGER NOT NULL,
            pdf_sealed BLOB,                         -- NULL once the dossier's personal data is purged
            uploaded_at TEXT,                        -- when the central confirmed it holds the blob
            PRIMARY KEY (submission_id, document_id)
        )
        """
    )
    db.execute(
        """
        CREATE TRIGGER dossier_documents_immutable BEFORE UPDATE OF submission_id, document_id, position,
            sha256, size_bytes, pages ON dossier_documents
        BEGIN SELECT RAISE(ABORT, 'submitted documents are immutable'); END
        """
    )


@migrations()
def m012_ratings(db: sqlite_utils.Database):
    # Satisfaction ratings (kiosk/core/ratings.py, docs/ratings.md): anonymous by construction. No dossier
    # id, no tracking code, no time of day; WITHOUT ROWID and a random key, so the order the rows are kept
    # and read in says nothing of the order the citizens came in. ``state``: pending until the central
    # confirms it holds the rating (sent), or refused by it for good.
    db.execute(
        """
        CREATE TABLE ratings (
            rating_id TEXT PRIMARY KEY,              -- 32 random hex digits: the central's idempotency key
            station_id TEXT NOT NULL,
            local_day TEXT NOT NULL,                 -- YYYY-MM-DD, the station's own day
            moment TEXT NOT NULL CHECK (moment IN ('submitted', 'handed_over')),
            channel TEXT NOT NULL,                   -- kiosk | counter | mobile
            procedure_code TEXT,                     -- the national procedure code, or NULL
            answers TEXT NOT NULL,                   -- JSON {criterion: level 1..3}
            state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'sent', 'refused')),
            refused_reason TEXT
        ) WITHOUT ROWID
        """
    )
    db.execute("CREATE INDEX ratings_day ON ratings(local_day)")
    db.execute("CREATE INDEX ratings_state ON ratings(state)")


@migrations()
def m013_carried_fees_and_reopened_days(db: sqlite_utils.Database):
    # The counter's money after corrections (agent/report.py, docs/counter-money.md). Two more kinds of
    # ledger line: ``carried`` (what was paid for the dossier a correction replaces, moved to the
    # correction, ``from_submission_id`` naming the old one) and ``refund`` (money given back when the
    # correction's fee is lower). SQLite cannot change a CHECK, so the table is rebuilt with its rows and
    # ids; from now on its lines are never changed or deleted.
    db.execute(
        """
        CREATE TABLE ledger_m013 (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,                        -- UTC, ISO 8601
            local_day TEXT NOT NULL,                 -- the station's day when it was written
            staff_id INTEGER NOT NULL REFERENCES staff(id),
            kind TEXT NOT NULL CHECK (kind IN ('fee', 'reprint', 'carried', 'refund')),
            submission_id TEXT NOT NULL REFERENCES dossiers(submission_id),
            amount_vnd INTEGER NOT NULL DEFAULT 0 CHECK (amount_vnd >= 0),
            from_submission_id TEXT REFERENCES dossiers(submission_id),
            CHECK ((kind = 'carried') = (from_submission_id IS NOT NULL))
        )
        """
    )
    db.execute("INSERT INTO ledger_m013 (id, at, local_day, staff_id, kind, submission_id, amount_vnd) "
               "SELECT id, at, local_day, staff_id, kind, submission_id, amount_vnd FROM ledger ORDER BY id")
    db.execute("DROP TABLE ledger")
    db.execute("ALTER TABLE ledger_m013 RENAME TO ledger")
    db.execute("CREATE INDEX ledger_day ON ledger(local_day, staff_id)")
    db.execute("CREATE INDEX ledger_dossier ON ledger(submission_id)")
    db.execute("CREATE INDEX ledger_carried_from ON ledger(from_submission_id) WHERE from_submission_id IS NOT NULL")
    db.execute("CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger "
               "BEGIN SELECT RAISE(ABORT, 'ledger lines are never changed'); END")
    db.execute("CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger "
               "BEGIN SELECT RAISE(ABORT, 'ledger lines are never deleted'); END")
    # A signed day can be reopened by a supervisor with a reason, then signed again: every closing is kept
    # (the history), at most one per day is active (not reopened). Rebuilt to drop UNIQUE(local_day).
    db.execute(
        """
        CREATE TABLE day_closings_m013 (
            id INTEGER PRIMARY KEY,
            local_day TEXT NOT NULL,
            report TEXT NOT NULL,                    -- the day's report as signed (JSON): the frozen snapshot
            report_sha256 TEXT NOT NULL,             -- of ``report``'s UTF-8 bytes
            signed_by INTEGER NOT NULL REFERENCES staff(id),
            signed_at TEXT NOT NULL,                 -- UTC, whole seconds: entries from then on go to a later day
            reopened_at TEXT,                        -- UTC, whole seconds; NULL while the closing is active
            reopened_by INTEGER REFERENCES staff(id),
            reopen_reason TEXT,                      -- the supervisor's words, 5 to 200 characters
            CHECK ((reopened_at IS NULL) = (reopened_by IS NULL) AND (reopened_at IS NULL) = (reopen_reason IS NULL))
        )
        """
    )
    db.execute("INSERT INTO day_closings_m013 (id, local_day, report, report_sha256, signed_by, signed_at) "
               "SELECT id, local_day, report, report_sha256, signed_by, signed_at FROM day_closings ORDER BY id")
    db.execute("DROP TABLE day_closings")
    db.execute("ALTER TABLE day_closings_m013 RENAME TO day_closings")
    db.execute("CREATE UNIQUE INDEX day_closings_active ON day_closings(local_day) WHERE reopened_at IS NULL")
    db.execute("CREATE INDEX day_closings_day ON day_closings(local_day, signed_at)")
    db.execute("CREATE TRIGGER day_closings_no_delete BEFORE DELETE ON day_closings "
               "BEGIN SELECT RAISE(ABORT, 'day closings are kept'); END")
    db.execute("CREATE TRIGGER day_closings_signed BEFORE UPDATE OF id, local_day, report, report_sha256, "
               "signed_by, signed_at ON day_closings "
               "BEGIN SELECT RAISE(ABORT, 'a signed report is frozen'); END")
    db.execute("CREATE TRIGGER day_closings_reopened_once BEFORE UPDATE OF reopened_at, reopened_by, reopen_reason "
               "ON day_closings WHEN OLD.reopened_at IS NOT NULL "
               "BEGIN SELECT RAISE(ABORT, 'a closing is reopened once'); END")


@migrations()
def m014_one_correction_each(db: sqlite_utils.Database):
    # A dossier is superseded once (kiosk/core/dossiers.py, docs/sync.md "Refusals and corrections"): a
    # second correction of it is refused here too, whatever the caller checked. A trigger, not a unique
    # index, so a database that already holds two corrections of one dossier (made before this rule)
    # migrates and keeps them. The index finds a dossier's correction, and the open refusals, at once.
    db.execute("CREATE INDEX dossiers_supersedes ON dossiers(supersedes) WHERE supersedes IS NOT NULL")
    db.execute("CREATE TRIGGER dossiers_superseded_once BEFORE INSERT ON dossiers WHEN NEW.supersedes IS NOT NULL "
               "AND EXISTS (SELECT 1 FROM dossiers WHERE supersedes = NEW.supersedes) "
               "BEGIN SELECT RAISE(ABORT, 'this dossier is already superseded'); END")
    # The dossier a correction's draft replaces, in the clear (its answers are sealed), so starting a
    # second correction of the same dossier resumes the open one (kiosk/core/drafts.py).
    db.execute("ALTER TABLE drafts ADD COLUMN supersedes TEXT")
    db.execute("CREATE INDEX drafts_supersedes ON drafts(supersedes) WHERE supersedes IS NOT NULL")


@migrations()
def m015_outbox_waiting_order(db: sqlite_utils.Database):
    # The staff home's "waiting to be sent" list (every pending dossier, all days, oldest first, the first
    # 200: kiosk/core/outbox.py waiting_list) and the banners' oldest waiting time read this index in
    # order, instead of sorting every pending row on each page.
    db.execute("CREATE INDEX outbox_waiting ON outbox(state, enqueued_at)")


@migrations()
def m016_catalog_release(db: sqlite_utils.Database):
    # The catalog release (sync/catalog_release.py) a draft started on and a dossier was made with: a draft
    # finishes on its own release after the station switches; NULL is the catalog of paths.procedures (the
    # one shipped, before any release). A dossier's is part of what it is: immutable like the rest.
    db.execute("ALTER TABLE drafts ADD COLUMN catalog_release INTEGER")
    db.execute("ALTER TABLE dossiers ADD COLUMN catalog_release INTEGER")
    _dossier_columns_immutable(db, "staff_id, local_day, fee_due_vnd, applicant_masked, fee_basis, catalog_release")


# The counts the staff bar, the home and the sync worker read on every page and cycle, kept by triggers in
# the transaction that changes the rows (m017): rebuilt from the rows by ``retally`` (the migration, and
# ``kiosk check --full --recount``), compared with a recount by ``kiosk check --full``.
def _tally_row(row: str, sign: str) -> str:
    """The statements that add (``sign`` "+") or take away ("-") one outbox row (``NEW`` or ``OLD``) in
    ``outbox_tally``: its state and dossier's station id, on a stick or not, superseded or not."""
    station = f"coalesce((SELECT station_id FROM dossiers WHERE submission_id = {row}.submission_id), '')"
    make = (f"INSERT OR IGNORE INTO outbox_tally (state, station_id) VALUES ({row}.state, {station});\n"
            if sign == "+" else "")
    return make + f"""UPDATE outbox_tally SET n = n {sign} 1,
            on_stick = on_stick {sign} EXISTS (SELECT 1 FROM sync_bundle_items WHERE submission_id = {row}.submission_id),
            superseded = superseded {sign} ({row}.superseded != 0)
        WHERE state = {row}.state AND station_id = {station};"""


OUTBOX_TALLY_TRIGGERS = (
    # An insert adds its row's part, a delete takes it away, a change of state or of ``superseded`` moves it.
    f"CREATE TRIGGER outbox_tally_insert AFTER INSERT ON outbox BEGIN {_tally_row('NEW', '+')} END",
    f"CREATE TRIGGER outbox_tally_delete AFTER DELETE ON outbox BEGIN {_tally_row('OLD', '-')} END",
    f"""CREATE TRIGGER outbox_tally_update AFTER UPDATE OF state, superseded ON outbox
    WHEN OLD.state IS NOT NEW.state OR OLD.superseded IS NOT NEW.superseded BEGIN
        {_tally_row('OLD', '-')} {_tally_row('NEW', '+')} END""",
    # A dossier's first bundle puts its row on a stick; its last bundle line gone takes it off.
    """CREATE TRIGGER outbox_tally_bundled AFTER INSERT ON sync_bundle_items
    WHEN NOT EXISTS (SELECT 1 FROM sync_bundle_items WHERE submission_id = NEW.submission_id
                     AND bundle_id != NEW.bundle_id) BEGIN
        UPDATE outbox_tally SET on_stick = on_stick + 1
        WHERE state = (SELECT state FROM outbox WHERE submission_id = NEW.submission_id)
          AND station_id = coalesce((SELECT station_id FROM dossiers WHERE submission_id = NEW.submission_id), '');
    END""",
    """CREATE TRIGGER outbox_tally_unbundled AFTER DELETE ON sync_bundle_items
    WHEN NOT EXISTS (SELECT 1 FROM sync_bundle_items WHERE submission_id = OLD.submission_id) BEGIN
        UPDATE outbox_tally SET on_stick = on_stick - 1
        WHERE state = (SELECT state FROM outbox WHERE submission_id = OLD.submission_id)
          AND station_id = coalesce((SELECT station_id FROM dossiers WHERE submission_id = OLD.submission_id), '');
    END""",
    # A dossier that names the one it supersedes marks that one's outbox row (which moves it in the tally).
    """CREATE TRIGGER outbox_superseded AFTER INSERT ON dossiers WHEN NEW.supersedes IS NOT NULL BEGIN
        UPDATE outbox SET superseded = 1 WHERE submission_id = NEW.supersedes AND superseded = 0;
    END""",
    # The documents' bytes still to send (kept, not confirmed uploaded): the staff bar's "papers waiting".
    """CREATE TRIGGER document_tally_insert AFTER INSERT ON dossier_documents
    WHEN NEW.uploaded_at IS NULL AND NEW.pdf_sealed IS NOT NULL BEGIN
        UPDATE document_tally SET unsent = unsent + 1, unsent_bytes = unsent_bytes + NEW.size_bytes;
    END""",
    """CREATE TRIGGER document_tally_delete AFTER DELETE ON dossier_documents
    WHEN OLD.uploaded_at IS NULL AND OLD.pdf_sealed IS NOT NULL BEGIN
        UPDATE document_tally SET unsent = unsent - 1, unsent_bytes = unsent_bytes - OLD.size_bytes;
    END""",
    """CREATE TRIGGER document_tally_update AFTER UPDATE OF uploaded_at, pdf_sealed, size_bytes ON dossier_documents
    WHEN (OLD.uploaded_at IS NULL AND OLD.pdf_sealed IS NOT NULL)
      OR (NEW.uploaded_at IS NULL AND NEW.pdf_sealed IS NOT NULL)
    BEGIN
        UPDATE document_tally SET
            unsent = unsent - (OLD.uploaded_at IS NULL AND OLD.pdf_sealed IS NOT NULL)
                            + (NEW.uploaded_at IS NULL AND NEW.pdf_sealed IS NOT NULL),
            unsent_bytes = unsent_bytes
                - CASE WHEN OLD.uploaded_at IS NULL AND OLD.pdf_sealed IS NOT NULL THEN OLD.size_bytes ELSE 0 END
                + CASE WHEN NEW.uploaded_at IS NULL AND NEW.pdf_sealed IS NOT NULL THEN NEW.size_bytes ELSE 0 END;
    END""",
    # A payload purged: its acknowledgement leaves the purge's index (and one recorded after the purge is
    # not put in it).
    """CREATE TRIGGER sync_acks_payload_purged AFTER UPDATE OF payload_sealed ON dossiers
    WHEN NEW.payload_sealed IS NULL AND OLD.payload_sealed IS NOT NULL BEGIN
        UPDATE sync_acks SET payload_purged = 1 WHERE submission_id = NEW.submission_id;
    END""",
    """CREATE TRIGGER sync_acks_after_purge AFTER INSERT ON sync_acks
    WHEN (SELECT payload_sealed IS NULL FROM dossiers WHERE submission_id = NEW.submission_id) BEGIN
        UPDATE sync_acks SET payload_purged = 1 WHERE submission_id = NEW.submission_id;
    END""",
)

# What the tallies are, counted from the rows: ``retally`` writes these, the full check compares them.
OUTBOX_RECOUNT = (
    "SELECT o.state, coalesce(d.station_id, '') AS station_id, COUNT(*) AS n, "
    "coalesce(SUM(EXISTS (SELECT 1 FROM sync_bundle_items i WHERE i.submission_id = o.submission_id)), 0) AS on_stick, "
    "coalesce(SUM(EXISTS (SELECT 1 FROM dossiers s WHERE s.supersedes = o.submission_id)), 0) AS superseded "
    "FROM outbox o LEFT JOIN dossiers d USING (submission_id) GROUP BY o.state, coalesce(d.station_id, '')")
DOCUMENT_RECOUNT = ("SELECT COUNT(*), coalesce(SUM(size_bytes), 0) FROM dossier_documents "
                    "WHERE uploaded_at IS NULL AND pdf_sealed IS NOT NULL")


def retally(conn) -> None:
    """Rebuild the kept counts and marks from the rows, in the caller's transaction: each outbox row's
    ``superseded``, each acknowledgement's ``payload_purged``, ``outbox_tally`` and ``document_tally``."""
    conn.execute("UPDATE outbox SET superseded = EXISTS (SELECT 1 FROM dossiers s WHERE s.supersedes = "
                 "outbox.submission_id) WHERE superseded != EXISTS (SELECT 1 FROM dossiers s "
                 "WHERE s.supersedes = outbox.submission_id)")
    conn.execute("UPDATE sync_acks SET payload_purged = coalesce((SELECT payload_sealed IS NULL FROM dossiers d "
                 "WHERE d.submission_id = sync_acks.submission_id), 0)")
    conn.execute("DELETE FROM outbox_tally")
    conn.execute("INSERT INTO outbox_tally (state, station_id, n, on_stick, superseded) " + OUTBOX_RECOUNT)
    conn.execute("UPDATE document_tally SET (unsent, unsent_bytes) = (" + DOCUMENT_RECOUNT + ")")


@migrations()
def m017_flat_queries(db: sqlite_utils.Database):
    # Queries that stay flat as dossiers pile up (issue 18, docs/architecture.md "Counts and indexes"): every
    # page and every sync cycle reads an index range or a kept count, never every dossier or pending row.
    # Staff search a masked name by its start: a range on this index (NOCASE, as LIKE compares), the newest
    # first from the second column or, for a common start, along ``dossiers_submitted``.
    db.execute("CREATE INDEX dossiers_applicant ON dossiers(applicant_masked COLLATE NOCASE, submitted_at)")
    db.execute("CREATE INDEX dossiers_submitted ON dossiers(submitted_at)")
    # The latest refusals closed by a correction: the corrections, newest first.
    db.execute("CREATE INDEX dossiers_corrections ON dossiers(submitted_at) WHERE supersedes IS NOT NULL")
    # The staff bar's notices: the latest official codes changed and dossiers reissued, not a walk back
    # through every audit event.
    db.execute("CREATE INDEX audit_code_changed ON audit_events(seq) WHERE action = 'dossier.code_changed'")
    db.execute("CREATE INDEX audit_reissued ON audit_events(seq) WHERE action = 'dossier.reissued'")
    # The purge reads the acknowledgements whose payload is still here, oldest first.
    db.execute("ALTER TABLE sync_acks ADD COLUMN payload_purged INTEGER NOT NULL DEFAULT 0")
    db.execute("CREATE INDEX sync_acks_to_purge ON sync_acks(acknowledged_at) WHERE payload_purged = 0")
    # An outbox row whose dossier another supersedes (a refusal closed): the open refusals are an index.
    db.execute("ALTER TABLE outbox ADD COLUMN superseded INTEGER NOT NULL DEFAULT 0")
    db.execute("CREATE INDEX outbox_open_refusals ON outbox(enqueued_at) WHERE state = 'rejected' AND superseded = 0")
    # A blob the central confirmed marks every document with those bytes sent.
    db.execute("CREATE INDEX dossier_documents_sha256 ON dossier_documents(sha256)")
    # The worker's wait: the latest time a pending row was put back; the notices' "being sent again" count.
    db.execute("CREATE INDEX outbox_deferred ON outbox(deferred_at) WHERE state = 'pending'")
    db.execute("CREATE INDEX outbox_pending_errors ON outbox(last_error) WHERE state = 'pending' "
               "AND last_error IS NOT NULL")
    db.execute(
        """
        CREATE TABLE outbox_tally (
            state TEXT NOT NULL,
            station_id TEXT NOT NULL,                -- the dossier's (another than the station's: re-identified)
            n INTEGER NOT NULL DEFAULT 0,            -- outbox rows in this state
            on_stick INTEGER NOT NULL DEFAULT 0,     -- of them, copied to at least one USB bundle
            superseded INTEGER NOT NULL DEFAULT 0,   -- of them, rows whose dossier another supersedes
            PRIMARY KEY (state, station_id)
        ) WITHOUT ROWID
        """
    )
    db.execute("CREATE TABLE document_tally (unsent INTEGER NOT NULL, unsent_bytes INTEGER NOT NULL)")
    db.execute("INSERT INTO document_tally (unsent, unsent_bytes) VALUES (0, 0)")
    for trigger in OUTBOX_TALLY_TRIGGERS:
        db.execute(trigger)
    retally(db.conn)


def tally_drift(conn) -> list[str]:
    """Where the kept counts and marks differ from a recount of the rows (none, since triggers keep them in
    the transaction that changes the rows): one line per difference, [] when they agree."""
    kept = {(r[0], r[1]): tuple(r[2:]) for r in conn.execute(
        "SELECT state, station_id, n, on_stick, superseded FROM outbox_tally")
        if any(r[2:])}
    counted = {(r[0], r[1]): tuple(r[2:]) for r in conn.execute(OUTBOX_RECOUNT)}
    none = (0, 0, 0)
    drift = [f"outbox {state} ({station or '-'}): kept (rows, on a stick, superseded) {kept.get(k, none)}, "
             f"counted {counted.get(k, none)}"
             for k in sorted(set(kept) | set(counted)) for state, station in [k]
             if kept.get(k, none) != counted.get(k, none)]
    (marks,) = conn.execute("SELECT COUNT(*) FROM outbox WHERE superseded != EXISTS (SELECT 1 FROM dossiers s "
                            "WHERE s.supersedes = outbox.submission_id)").fetchone()
    if marks:
        drift.append(f"outbox: {marks} row(s) marked superseded wrongly")
    (marks,) = conn.execute("SELECT COUNT(*) FROM sync_acks a JOIN dossiers d USING (submission_id) "
                            "WHERE a.payload_purged != (d.payload_sealed IS NULL)").fetchone()
    if marks:
        drift.append(f"sync_acks: {marks} acknowledgement(s) marked purged wrongly")
    kept_documents = tuple(conn.execute("SELECT unsent, unsent_bytes FROM document_tally").fetchone())
    counted_documents = tuple(conn.execute(DOCUMENT_RECOUNT).fetchone())
    if kept_documents != counted_documents:
        drift.append(f"documents to send (count, bytes): kept {kept_documents}, counted {counted_documents}")
    return drift
