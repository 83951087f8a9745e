-- A station database as the previous release (two migration sets, "dvc-kiosk" and "dvc-kiosk-sync")
-- left it: release. Dumped with sqlite3 iterdump from a database that release made; no rows but
-- its migration records.
BEGIN TRANSACTION;
CREATE TABLE "_sqlite_migrations" (
   "id" INTEGER PRIMARY KEY,
   "migration_set" TEXT,
   "name" TEXT,
   "applied_at" TEXT
);
INSERT INTO "_sqlite_migrations" VALUES(1,'dvc-kiosk','m001_dossiers','2026-12-01 20:20:49.428092+00:00');
INSERT INTO "_sqlite_migrations" VALUES(2,'dvc-kiosk','m002_receipt_prints','2026-12-01 20:20:49.428754+00:00');
INSERT INTO "_sqlite_migrations" VALUES(3,'dvc-kiosk','m003_counter','2026-12-01 20:20:49.429821+00:00');
INSERT INTO "_sqlite_migrations" VALUES(4,'dvc-kiosk','m004_incarnations','2026-12-01 20:20:49.430336+00:00');
INSERT INTO "_sqlite_migrations" VALUES(5,'dvc-kiosk-sync','m001_sync_tables','2026-12-01 20:20:49.432372+00:00');
INSERT INTO "_sqlite_migrations" VALUES(6,'dvc-kiosk-sync','m002_central_restores','2026-12-01 20:20:49.433522+00:00');
INSERT INTO "_sqlite_migrations" VALUES(7,'dvc-kiosk-sync','m003_deferred_at','2026-12-01 20:20:49.434094+00:00');
CREATE TABLE audit_events (
            seq INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            subject TEXT,
            detail TEXT NOT NULL DEFAULT '{}',
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        );
CREATE TABLE daily_sequence (day TEXT PRIMARY KEY, last INTEGER NOT NULL);
CREATE TABLE day_closings (
            id INTEGER PRIMARY KEY,
            local_day TEXT NOT NULL UNIQUE,
            report TEXT NOT NULL,
            report_sha256 TEXT NOT NULL,
            signed_by INTEGER NOT NULL REFERENCES staff(id),
            signed_at TEXT NOT NULL
        );
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
        , staff_id INTEGER REFERENCES staff(id), local_day TEXT, fee_due_vnd INTEGER NOT NULL DEFAULT 0, applicant_masked TEXT);
CREATE TABLE drafts (
            id TEXT PRIMARY KEY,
            procedure_slug TEXT NOT NULL,
            procedure_version TEXT NOT NULL,
            answers_sealed BLOB NOT NULL,
            created_at TEXT NOT NULL,
            touched_at TEXT NOT NULL
        );
CREATE TABLE incarnations (
            n INTEGER PRIMARY KEY,
            started_at TEXT NOT NULL,               -- UTC
            reason TEXT NOT NULL                    -- restore | tracking_code_taken | ...
        );
CREATE TABLE ledger (
            id INTEGER PRIMARY KEY,
            at TEXT NOT NULL,
            local_day TEXT NOT NULL,
            staff_id INTEGER NOT NULL REFERENCES staff(id),
            kind TEXT NOT NULL CHECK (kind IN ('fee', 'reprint')),
            submission_id TEXT NOT NULL REFERENCES dossiers(submission_id),
            amount_vnd INTEGER NOT NULL DEFAULT 0
        );
CREATE TABLE outbox (
            submission_id TEXT PRIMARY KEY REFERENCES dossiers(submission_id),
            state TEXT NOT NULL DEFAULT 'pending',   -- pending | sent | rejected
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_at TEXT,
            last_error TEXT,
            enqueued_at TEXT NOT NULL
        , deferred_at TEXT);
CREATE TABLE receipt_prints (
            id INTEGER PRIMARY KEY,
            submission_id TEXT NOT NULL REFERENCES dossiers(submission_id),
            requested_at TEXT NOT NULL,
            requested_by TEXT NOT NULL,            -- citizen, or the staff member who reprinted
            finished_at TEXT,
            status TEXT NOT NULL DEFAULT 'pending', -- pending, or the printer's status code when done
            ok INTEGER
        );
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
        );
CREATE TABLE sync_acks (
            submission_id TEXT PRIMARY KEY REFERENCES dossiers(submission_id),
            central_code TEXT NOT NULL,
            acknowledged_at TEXT NOT NULL,           -- here, UTC: the purge clock starts then
            via TEXT NOT NULL,                       -- online | bundle
            ack TEXT NOT NULL                        -- the signed envelope, as received
        , store TEXT);
CREATE TABLE sync_bundle_items (
            bundle_id TEXT NOT NULL REFERENCES sync_bundles(bundle_id),
            submission_id TEXT NOT NULL REFERENCES dossiers(submission_id),
            PRIMARY KEY (bundle_id, submission_id)
        );
CREATE TABLE sync_bundles (
            bundle_id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            file_name TEXT NOT NULL,
            dossiers INTEGER NOT NULL
        );
CREATE TABLE sync_lost (
            submission_id TEXT PRIMARY KEY REFERENCES dossiers(submission_id),
            found_at TEXT NOT NULL
        );
CREATE TABLE sync_state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE UNIQUE INDEX "idx__sqlite_migrations_migration_set_name"
    ON "_sqlite_migrations" ("migration_set", "name");
CREATE INDEX dossiers_tracking_compact ON dossiers(replace(tracking_code, '-', ''));
CREATE INDEX outbox_pending ON outbox(state, next_attempt_at);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit_events BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit_events BEGIN SELECT RAISE(ABORT, 'audit events are append-only'); END;
CREATE INDEX receipt_prints_dossier ON receipt_prints(submission_id, id);
CREATE INDEX ledger_day ON ledger(local_day, staff_id);
CREATE INDEX dossiers_day ON dossiers(local_day, staff_id);
CREATE TRIGGER dossiers_immutable BEFORE UPDATE OF
            submission_id, tracking_code, station_id, channel, procedure_code, procedure_slug,
            procedure_version, submitted_at, payload_sha256, supersedes, staff_id, local_day, fee_due_vnd,
            applicant_masked
        ON dossiers BEGIN SELECT RAISE(ABORT, 'submitted dossiers are immutable'); END;
CREATE INDEX sync_bundle_items_dossier ON sync_bundle_items(submission_id);
COMMIT;
