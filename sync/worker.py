"""The station's sync worker: its own process (``kiosk sync run``), so the web app never waits on the network.

One cycle: push the due outbox rows (in batches, oldest first, one kept-alive connection), pull status
changes, purge payloads whose acknowledgement is older than the retention period.

- acked (201, or 200 for a duplicate): outbox 'sent', the official code and status 'received' recorded,
  the signed acknowledgement kept, an audit event; all in one transaction.
- rejected (a signed 409/422): outbox 'rejected' with the reason, dossier status 'rejected'; never retried
  by the worker: staff look at it.
- transient (network, timeout, 5xx, 429, anything not signed by the central): the row waits a full-jitter
  backoff (at least Retry-After), and the rest of the batch waits for the next cycle: the link is down.
- refused (401/403: station unknown, revoked, clock wrong): nothing is blamed on a dossier; the worker
  backs off and ``sync status`` shows why.
- storage (the station's disk is full, its folder read-only): the cycle stops where it stands, nothing is
  lost (each write is one transaction, each exchange idempotent); the worker backs off as for a link
  error, logs the cause once per episode ("disk is full; waiting") and resumes when the disk takes writes.

A dossier's documents (its PDFs, kiosk/core/documents.py) go first: before a batch is sent, every attachment
of its dossiers the central has not confirmed is uploaded as a resumable blob (``upload_blob``, chunks of
``blob_chunk_bytes``) and marked uploaded. A cut defers the dossiers not yet ready (the next try resumes at
the central's offset); the ready ones are sent. A 428 ``missing_blobs`` (the central lost blobs) marks the
dossier's documents unsent again and defers it, so the next pass uploads them again.

The worker may be killed at any instant: the central's receipt is idempotent and the station records an
acknowledgement in one transaction, so a dossier acknowledged but not yet recorded is simply sent again
and gets the same acknowledgement.

This module owns sync's station tables ``sync_acks``, ``sync_state`` and ``sync_lost`` (the USB bundles'
are sync/bundle.py's); the dossiers and the outbox it reads and changes through the core's functions.
"""
import contextlib
import json
import logging
import random
import sqlite3
import threading
import time
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography.exceptions import InvalidTag

from kiosk.core import audit, documents, dossiers, outbox, ratings
from kiosk.core.db import connect, storage_problem, write_transaction
from kiosk.core.dossiers import STATUSES
from kiosk.core.sealing import open_sealed

from . import protocol
from .client import MAX_RETRY_AFTER_S, BlobRefused, CentralClient, LinkError, Outcome

log = logging.getLogger("dvc.sync")
CENTRAL_RESTORED = "central_restored"  # the reason given to rows sent again after the central went back
RATINGS_BATCH = 200  # satisfaction ratings per request (the central takes up to 500)


@dataclass
class SyncSettings:
    batch_size: int = 50          # outbox rows read per batch
    base_delay: float = 2.0       # seconds: the first retry window; doubles per attempt
    max_delay: float = 900.0      # the cap of a retry window
    timeout: float = 30.0         # one HTTP exchange
    retention_days: float = 7.0   # keep the sealed payload this long after the acknowledgement
    idle_interval: float = 15.0   # between cycles with nothing to do
    pull_limit: int = 500
    batch_http: bool = True       # many dossiers per request (POST /submissions/batch, gzip); PUT one by one if not
    blob_chunk_bytes: int = 64 * 1024  # a document is uploaded in chunks this big: a cut at 64 kbit/s loses ~8 s
    heartbeat_seconds: float = 60.0  # at most one heartbeat per this long, sooner when a device changed (sync/heartbeat.py)

    @classmethod
    def from_config(cls, config: dict) -> "SyncSettings":
        given = config.get("sync", {})
        return cls(**{f.name: type(f.default)(given[f.name]) for f in fields(cls) if f.name in given})


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """AWS's "full jitter": uniform in [0, min(cap, base * 2^attempt)]."""
    return rng.uniform(0, min(cap, base * (2 ** min(attempt, 30))))


# -- recording outcomes (shared with USB ack files) --------------------------------------------------------

def store_key(store) -> str | None:
    """The central store's identity as one string ("<store_id>/<generation>"), or None when not told."""
    if not isinstance(store, dict) or "store_id" not in store or "generation" not in store:
        return None
    return f"{store['store_id']}/{store['generation']}"


def record_ack(conn: sqlite3.Connection, document: dict, envelope: dict, via: str) -> bool:
    """Mark a dossier acknowledged; True when this changed anything (a second ack changes nothing). A code
    that differs from the one the dossier held (the central lost it in a restore and could not give it
    back) is recorded and audited, for staff to tell the citizen."""
    sid = document["submission_id"]
    with write_transaction(conn):
        if not outbox.mark_sent(conn, sid):
            return False
        before = dossiers.record_central_code(conn, sid, document["central_code"])
        conn.execute("INSERT OR REPLACE INTO sync_acks (submission_id, central_code, acknowledged_at, via, ack, "
                     "store) VALUES (?, ?, ?, ?, ?, ?)",
                     (sid, document["central_code"], iso(utcnow()), via, json.dumps(envelope, ensure_ascii=False),
                      store_key(document.get("store"))))
        audit.append(conn, "sync", "dossier.acknowledged", sid, {"central_code": document["central_code"], "via": via})
        if before and before != document["central_code"]:
            audit.append(conn, "sync", "dossier.code_changed", sid, {"from": before, "to": document["central_code"]})
    return True


def purge_candidates(conn: sqlite3.Connection, acknowledged_before: str, received_before: str,
                     limit: int = 500) -> list[sqlite3.Row]:
    """Sent dossiers that still hold their payload, acknowledged here and received at the central (its
    acknowledgement says when) no later than the two times given: submission id, payload hash,
    ``acknowledged_at`` and ``received_at``, the earliest acknowledged first. Read along the index
    ``sync_acks_to_purge`` (the acknowledgements whose payload is still here, by time; a trigger marks one
    when its payload is purged) up to the cut: never the dossiers purged before, however many."""
    return conn.execute(
        "SELECT * FROM (SELECT d.submission_id, d.payload_sha256, a.acknowledged_at, "
        "coalesce(json_extract(a.ack, '$.document.received_at'), a.acknowledged_at) AS received_at "
        "FROM sync_acks a CROSS JOIN outbox o ON o.submission_id = a.submission_id CROSS JOIN dossiers d "
        "ON d.submission_id = a.submission_id WHERE a.payload_purged = 0 AND a.acknowledged_at <= ? "
        "AND o.state = 'sent' AND d.payload_sealed IS NOT NULL ORDER BY a.acknowledged_at) "
        "WHERE received_at <= ? LIMIT ?",
        (acknowledged_before, received_before, limit)).fetchall()


def mark_documents_sent(conn: sqlite3.Connection, submission_id: str) -> int:
    """The central acknowledged the dossier, so it holds every document the dossier names (it receives none
    without them): mark those not marked yet (a dossier that went by USB, or was acknowledged as a duplicate)."""
    return sum(documents.mark_uploaded(conn, row["sha256"]) for row in documents.unsent(conn, submission_id))


def record_rejection(conn: sqlite3.Connection, submission_id: str, code: str, reason: str) -> bool:
    with write_transaction(conn):
        changed = outbox.mark_rejected(conn, submission_id, reason)
        if changed:
            dossiers.mark_rejected(conn, submission_id)
            audit.append(conn, "sync", "dossier.rejected", submission_id, {"code": code})
    return bool(changed)


def sync_state(conn: sqlite3.Connection) -> dict[str, str]:
    """Everything sync keeps in ``sync_state`` (the feed cursor, the central's store and clock, the last
    cycle...), by name. Raises sqlite3.OperationalError on a database not migrated yet."""
    return dict(conn.execute("SELECT name, value FROM sync_state").fetchall())


def lost_at_central(conn: sqlite3.Connection, limit: int = 200) -> list[dict]:
    """The dossiers the central lost after this station purged them, newest first: tracking code,
    official code and when it was found."""
    return [dict(r) for r in conn.execute(
        "SELECT d.tracking_code, d.central_code, l.found_at FROM sync_lost l JOIN dossiers d USING (submission_id) "
        "ORDER BY l.found_at DESC LIMIT ?", (limit,))]


def _prior(row) -> dict | None:
    """The central's earlier acknowledgement of a dossier sent again after a restore, or None."""
    return json.loads(row["prior_ack"]) if row["prior_ack"] else None


class SyncWorker:
    def __init__(self, db_path: str | Path, station_id: str, client: CentralClient, payload_key: bytes,
                 settings: SyncSettings | None = None, rng: random.Random | None = None):
        self.db_path, self.station_id, self.client = str(db_path), station_id, client
        self.payload_key = payload_key
        self.settings = settings or SyncSettings()
        self.rng = rng or random.Random()
        self.conn = connect(self.db_path)
        self.use_batch = self.settings.batch_http
        self._stop = None            # set by run(): checked between batches
        self.link_failures = 0       # consecutive cycles that hit a transient error: the cycle backoff
        self._known_store = None     # the central store last seen (sync_state.central_store)
        self.retry_after = 0.0
        self.storage_trouble = None  # the storage problem of this episode (logged once), or None
        self.heartbeat = None        # sync/heartbeat.py's Heartbeat (worker_from_config sets it), or None
        self.catalog = None          # sync/catalog_release.py's CatalogUpdates (worker_from_config sets it), or None

    def close(self) -> None:
        self.client.close()
        self.conn.close()

    # -- push ------------------------------------------------------------------------------------------
    def due(self, limit: int) -> list[sqlite3.Row]:
        """Pending rows whose retry time has come. A row put back to wait at a time still in the future of
        the clock now (``deferred_at``), or with a retry time further ahead than any backoff can put it, was
        deferred by a clock since corrected backwards: it is due now, not in however long the clock was off."""
        now = utcnow()
        return outbox.due(self.conn, iso(now), iso(now + timedelta(seconds=self._longest_wait())), limit)

    def _longest_wait(self) -> float:
        return max(self.settings.max_delay, MAX_RETRY_AFTER_S) + 60

    def stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def _defer(self, rows, reason: str, retry_after: float | None) -> None:
        """Put rows back with one full-jitter delay (at least Retry-After), so a batch stays together."""
        attempts = max(row["attempts"] for row in rows)
        delay = full_jitter(attempts, self.settings.base_delay, self.settings.max_delay, self.rng)
        now = utcnow()
        due = iso(now + timedelta(seconds=max(delay, retry_after or 0.0)))
        with write_transaction(self.conn):
            outbox.defer(self.conn, [row["submission_id"] for row in rows], reason, due, iso(now))

    def body(self, row) -> bytes | None:
        """The canonical document exactly as hashed at submit, or None when it cannot be rebuilt."""
        if row["payload_sealed"] is None:
            return None
        document = open_sealed(self.payload_key, row["payload_sealed"], row["submission_id"])
        body = protocol.canonical_json(document)
        return body if protocol.sha256_hex(body) == row["payload_sha256"] else None

    def _apply(self, row, outcome: Outcome, counts: dict) -> bool:
        """Record an acknowledgement or a refusal; False for an outcome that must wait."""
        if outcome.kind == "acked":
            record_ack(self.conn, outcome.document, outcome.envelope, "online")
            mark_documents_sent(self.conn, row["submission_id"])
            counts["acked" if outcome.created else "duplicate"] += 1
            self.check_store(outcome.document.get("store"))
            return True
        if outcome.kind == "rejected" and outcome.document.get("code") == "tracking_code_taken":
            # This station issued the code before (it was restored or reinstalled): the dossier goes again
            # under a new code of a new incarnation; staff are shown the change.
            dossiers.reissue_with_new_code(self.conn, self.payload_key, row["submission_id"])
            counts["recoded"] += 1
            return True
        if outcome.kind == "rejected":
            record_rejection(self.conn, row["submission_id"], outcome.document["code"], outcome.reason)
            counts["rejected"] += 1
            return True
        return False

    def _wait(self, rows, outcome: Outcome, counts: dict) -> None:
        self._defer(rows, outcome.reason, outcome.retry_after)
        counts["refused" if outcome.kind == "refused" else "transient"] += 1
        self.retry_after = outcome.retry_after or 0.0
        log.info("sync: %s for %d dossier(s) (%s); the rest waits", outcome.kind, len(rows), outcome.reason)

    def _missing_blobs(self, rows) -> None:
        """The central answered 428 missing_blobs (it lost blobs: restored, or its blob folder replaced): the
        dossiers' documents are sent again (a HEAD skips each it does have)."""
        with write_transaction(self.conn):
            marked = documents.mark_unsent(self.conn, [row["submission_id"] for row in rows])
        log.info("sync: the central lacks documents of %d dossier(s): %d to upload again", len(rows), marked)

    def upload_documents(self, items: list, counts: dict) -> tuple[list, list, Outcome | None]:
        """Upload the documents of the dossiers about to be sent, oldest first, each blob resumed where the
        central stopped and marked uploaded when it has it. Returns (the items ready to send, the rows that
        must wait, why they wait). A cut or a refusal to take more (quota, too many uploads) stops the
        uploads: that dossier and the later ones wait, the earlier ones go. A blob the central will never
        take (too large) or a PDF that is not here as its dossier names it quarantines that dossier only."""
        ready = []
        for index, (row, body) in enumerate(items):
            sid = row["submission_id"]
            problem = None
            try:
                for document in documents.unsent(self.conn, sid):
                    if self.stopping():
                        return ready, [], None
                    pdf = documents.pdf_of(self.conn, self.payload_key, sid, document["document_id"])
                    if pdf is None:
                        problem = ("local_documents", f"local_documents: the PDF of {document['document_id']} "
                                                      "is no longer here")
                        break
                    documents.mark_uploaded(self.conn, self.client.upload_blob(pdf, self.settings.blob_chunk_bytes))
            except InvalidTag:
                # As for the payload: a key that opens nothing is the station's problem, not the dossier's.
                return ready, [r for r, _ in items[index:]], Outcome(
                    "refused", "the payload key does not open a sealed document")
            except ValueError:
                problem = ("local_documents", "local_documents: a document's PDF does not match the hash its "
                                              "dossier names")
            except BlobRefused as exc:
                if exc.code != "blob_too_large":  # blob_quota_exceeded, too_many_uploads: wait, tell staff
                    return ready, [r for r, _ in items[index:]], Outcome("refused", str(exc))
                problem = ("blob_too_large", f"blob_too_large: a document of this dossier is larger than the "
                                             f"central takes ({exc.reason})")
            except LinkError as exc:
                if self.stopping():
                    return ready, [], None
                return ready, [r for r, _ in items[index:]], Outcome("transient", f"document upload: {exc}")
            if problem is None:
                ready.append((row, body))
            else:
                record_rejection(self.conn, sid, *problem)
                counts["rejected"] += 1
        return ready, [], None

    def push(self) -> dict:
        """Send what is due, batch by batch, until nothing is due or the link fails."""
        counts = {"acked": 0, "duplicate": 0, "rejected": 0, "transient": 0, "refused": 0, "recoded": 0}
        for _ in range(100_000):  # bounded; every pass settles or defers each row it read
            if self.stopping():
                return counts
            rows = self.due(self.settings.batch_size)
            if not rows:
                return counts
            items = []
            for row in rows:
                try:
                    body = self.body(row)
                except (InvalidTag, ValueError):
                    # The station's payload key does not open it: a configuration problem of the station
                    # (wrong data folder, replaced key), not of the dossier. Quarantining would blame every
                    # dossier; wait and show it instead.
                    self._wait([row], Outcome("refused", "the payload key does not open the sealed payload"),
                               counts)
                    return counts
                if body is None:
                    record_rejection(self.conn, row["submission_id"], "local_payload",
                                     "local_payload: the sealed payload is missing or does not match its hash")
                    counts["rejected"] += 1
                else:
                    items.append((row, body))
            items, unready, why = self.upload_documents(items, counts)
            if self.stopping():
                return counts  # cut short by a stop: what is uploaded stays uploaded, no backoff
            if unready:
                self._wait(unready, why, counts)  # the link failed: send what is ready, then stop
            if self.use_batch and items:
                result = self.client.post_batch([(r["submission_id"], b, r["payload_sha256"], _prior(r))
                                                 for r, b in items])
                if isinstance(result, Outcome) and result.kind == "unsupported":
                    self.use_batch = False  # a central with only PUT /submissions/{id}
                elif isinstance(result, Outcome) and self.stopping():
                    return counts  # cut short by a stop: not the link's fault, no backoff
                elif isinstance(result, Outcome):
                    self._wait([r for r, _ in items], result, counts)
                    return counts
                else:
                    waiting = [(row, outcome) for (row, _), outcome in zip(items, result, strict=True)
                               if not self._apply(row, outcome, counts)]
                    missing = [row for row, outcome in waiting if outcome.missing]
                    if missing:
                        self._missing_blobs(missing)
                    if waiting:
                        self._wait([row for row, _ in waiting], waiting[0][1], counts)
                        return counts
                    if unready:
                        return counts
                    continue
            for row, body in items:
                if self.stopping():  # honoured between two exchanges, not after the whole batch
                    return counts
                outcome = self.client.put_submission(row["submission_id"], body, row["payload_sha256"],
                                                     _prior(row))
                if outcome.kind == "transient" and self.stopping():
                    return counts
                if not self._apply(row, outcome, counts):
                    if outcome.missing:
                        self._missing_blobs([row])
                    self._wait([row], outcome, counts)
                    return counts
            if unready:
                return counts
        return counts

    # -- ratings ---------------------------------------------------------------------------------------
    def push_ratings(self) -> int:
        """Send the unsent satisfaction ratings (docs/ratings.md) in batches; returns how many the central
        now holds. Each batch's answer is recorded in one transaction (kiosk.core.ratings.mark); a batch
        whose answer is lost is sent again and the central, keeping each random id once, counts it once.
        Raises LinkError or NotGenuine; an older central without the endpoint leaves them waiting."""
        sent = 0
        for _ in range(10_000):  # bounded; every batch marks each rating it sent, or the link failed
            if self.stopping():
                return sent
            batch = ratings.unsent(self.conn, RATINGS_BATCH)
            if not batch:
                return sent
            answer = self.client.post_ratings(batch)
            if answer is None:
                return sent
            held, refused = answer
            if not held and not refused:
                raise protocol.NotGenuine("a ratings answer that settles none of the batch")
            ratings.mark(self.conn, held, refused)
            for rating_id, why in refused.items():
                log.warning("sync: the central refused rating %s: %s", rating_id, why)
            sent += len(held)
        return sent

    # -- pull ------------------------------------------------------------------------------------------
    def cursor(self) -> int:
        value = self._state("changes_cursor")
        return int(value) if value else 0

    def pull(self) -> int:
        """Apply the central's status changes; returns how many were applied. Raises LinkError/NotGenuine."""
        applied = 0
        for _ in range(1000):  # bounded: 1000 pages of changes per cycle
            if self.stopping():
                return applied
            since = self.cursor()
            feed = self.client.changes(since, self.settings.pull_limit, self.known_store())
            if feed is None:
                return applied  # 304: nothing after the cursor, in the store this station knows
            if self.check_store(feed.get("store"), feed.get("head")):
                continue  # the central went back in time: the cursor is reset, read its feed again from 0
            with write_transaction(self.conn):
                for change in feed["changes"]:
                    if change["status"] not in STATUSES:
                        continue
                    if dossiers.apply_status(self.conn, change["submission_id"], self.station_id, change["status"],
                                             change["central_code"]):
                        applied += 1
                        audit.append(self.conn, "sync", "dossier.status", change["submission_id"],
                                     {"status": change["status"]})
                self._put_state("changes_cursor", str(feed["cursor"]))
            if not feed["more"] or feed["cursor"] <= since:
                return applied
        return applied

    # -- purge -----------------------------------------------------------------------------------------
    def purge(self, now: datetime | None = None, central_now: datetime | None = None) -> int:
        """Drop the sealed personal data of dossiers the central acknowledged long enough ago: by this
        station's clock and the central's (its receipt time against the latest time it told us), past
        both the retention period and the central's restore window, and only those the central confirms
        it still holds (a signed holds answer), so a restore of any backup it may restore cannot lose
        one. A station clock days ahead therefore purges nothing early; one behind only purges later."""
        central_now = central_now or self.central_clock()
        if central_now is None:
            return 0
        now = now or utcnow()

        def cuts(keep: timedelta) -> tuple[str, str]:  # acknowledged and received before these
            return iso(now - keep), iso(central_now - keep)

        keep = timedelta(days=self.settings.retention_days)
        known_window = self._state("restore_window_s")
        if known_window is not None:
            keep = max(keep, timedelta(seconds=float(known_window)))
        rows = purge_candidates(self.conn, *cuts(keep))
        if not rows:
            return 0
        try:
            answer = self.client.holds([r["submission_id"] for r in rows])
        except (LinkError, protocol.NotGenuine) as exc:
            log.info("sync: no holds answer, nothing purged (%s)", exc)
            return 0
        if self.check_store(answer.get("store")):
            return 0
        held = answer["held"]
        if any(r["submission_id"] not in held for r in rows):
            # Acknowledged, yet the central does not hold it: it went back in time without saying so.
            self.rewind(answer.get("store"), "missing", resend_all=True)
            return 0
        window = timedelta(seconds=float(answer.get("restore_window_s") or 0))
        self._set_state("restore_window_s", str(window.total_seconds()))
        keep = max(keep, window)  # the window just learnt may be longer than what was assumed
        station_cut, central_cut = cuts(keep)
        purged = [r["submission_id"] for r in rows if held[r["submission_id"]] == r["payload_sha256"]
                  and r["acknowledged_at"] <= station_cut and r["received_at"] <= central_cut]
        for sid in purged:
            with write_transaction(self.conn):
                dossiers.purge_payload(self.conn, sid)
                audit.append(self.conn, "sync", "dossier.purged", sid, {})
        return len(purged)

    # -- a central that went back in time --------------------------------------------------------------
    def known_store(self) -> dict | None:
        """The central store this station last saw (kept in memory too: asked once per acknowledgement)."""
        if self._known_store is None:
            value = self._state("central_store")
            self._known_store = json.loads(value) if value else None
        return self._known_store

    def check_store(self, store, head: int | None = None) -> bool:
        """Compare what the central says it is (store id and generation, and the station's latest change
        number) with what this station last saw; True when the central went back in time (restored from
        a backup, or replaced), after rewinding."""
        if store_key(store) is None:
            return False  # a central that does not say (older protocol): nothing to compare
        known = self.known_store()
        if known is None:
            self._set_state("central_store", json.dumps(store))
            self._known_store = store
            return False
        if store_key(store) != store_key(known):
            self.rewind(store, "restored" if store["store_id"] == known["store_id"] else "replaced",
                        resend_all=False)
            return True
        if isinstance(head, int) and head < self.cursor():
            self.rewind(store, "behind", resend_all=True)
            return True
        return False

    def rewind(self, store, reason: str, resend_all: bool) -> dict:
        """The central went back in time: send again every dossier it acknowledged before (another store
        generation, or all of them when the generation did not change), each with its acknowledgement so
        it keeps its code; read the status feed again from the start; check the purged ones with the
        central (``reconcile_purged``); and tell staff. The documents of every dossier waiting to be sent are
        marked unsent, so the next push checks each with the central (HEAD) and uploads what it lost."""
        key = store_key(store)
        with write_transaction(self.conn):
            resent = outbox.resend_acknowledged(self.conn, f"{CENTRAL_RESTORED}: {reason}", resend_all, key or "")
            # Its blob folder may have gone back too: every waiting dossier's documents are offered again
            # (a HEAD skips each the central still has; those purged here cannot be resent anyway).
            waiting = outbox.pending_payloads(self.conn, outbox.pending_count(self.conn))
            documents.mark_unsent(self.conn, [row["submission_id"] for row in waiting])
            purged = outbox.sent_purged_count(self.conn)
            event = {"at": iso(utcnow()), "reason": reason, "resent": resent, "to_check": purged,
                     "generation": (store or {}).get("generation")}
            for name, value in (("changes_cursor", "0"), ("central_rewound", json.dumps(event)),
                                ("reconcile_purged", "0" if purged else ""), ("central_store", json.dumps(store))):
                self._put_state(name, value)
            audit.append(self.conn, "sync", "central.went_back", None, {k: event[k] for k in ("reason", "resent")})
        self._known_store = store
        log.warning("sync: the central went back in time (%s): %d dossier(s) sent again, %d purged to check",
                    reason, resent, purged)
        return event

    def reconcile_purged(self) -> int:
        """After a rewind: ask the central about every acknowledged dossier whose payload is already
        purged here (500 at a time, resumable); those it no longer holds are listed for staff in
        sync_lost. Returns how many were found lost."""
        after = self._state("reconcile_purged")
        if after is None or after == "":
            return 0
        lost = 0
        for _ in range(10_000):
            if self.stopping():
                return lost
            ids = outbox.sent_purged_after(self.conn, after if after != "0" else "", 500)
            if not ids:
                self._set_state("reconcile_purged", "")
                return lost
            answer = self.client.holds(ids)  # LinkError: resumed next cycle
            if self.check_store(answer.get("store")):
                return lost  # went back again meanwhile: the rewind starts the check over
            missing = [sid for sid in ids if sid not in answer["held"]]
            with write_transaction(self.conn):
                for sid in missing:
                    if self.conn.execute("INSERT OR IGNORE INTO sync_lost (submission_id, found_at) VALUES (?, ?)",
                                         (sid, iso(utcnow()))).rowcount:
                        audit.append(self.conn, "sync", "dossier.lost_at_central", sid, {})
                        lost += 1
                self._put_state("reconcile_purged", ids[-1])
            after = ids[-1]
        return lost

    def _state(self, name: str) -> str | None:
        row = self.conn.execute("SELECT value FROM sync_state WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def central_clock(self) -> datetime | None:
        """The central's time now, from the last time it told us (its Date header) and the monotonic
        time since; None when it never has."""
        told = self.client.central_time()
        if told is not None:
            return datetime.fromtimestamp(told, timezone.utc)
        value = self._state("central_clock")
        return datetime.fromisoformat(value) if value else None

    def _note_clocks(self) -> None:
        """Keep the central's time and how far this station's clock is from it, for purge and for staff."""
        told = self.client.central_time()
        if told is None:
            return
        self._set_state("central_clock", iso(datetime.fromtimestamp(told, timezone.utc)))
        self._set_state("clock_skew_seconds", str(round(time.time() - told)))

    # -- the loop --------------------------------------------------------------------------------------
    def cycle(self) -> dict:
        """One cycle. A storage problem (the disk is full, the folder read-only) ends it where it stands and
        the worker waits as for a link error (``link_failures``), logging the cause once per episode: it
        loses nothing, because every write is one transaction and every exchange is idempotent (an
        acknowledgement it could not record is asked for again, and the central answers the same)."""
        try:
            report = self._cycle()
        except (sqlite3.Error, OSError) as exc:
            cause = storage_problem(exc)
            if cause is None:
                raise
            with contextlib.suppress(sqlite3.Error):
                if self.conn.in_transaction:
                    self.conn.rollback()
            if cause != self.storage_trouble:
                log.error("sync: %s; waiting (nothing is lost: what was not recorded is sent again)", cause)
                self.storage_trouble = cause
            self.link_failures += 1
            return {"storage": 1}
        if self.storage_trouble is not None:
            log.warning("sync: the database takes writes again (it was: %s); resuming", self.storage_trouble)
            self.storage_trouble = None
        return report

    def _cycle(self) -> dict:
        self.retry_after = 0.0
        report = self.push()
        report["pulled"] = report["ratings"] = 0
        report["lost"] = report["purged"] = 0
        if not (report["transient"] or report["refused"] or self.stopping()):
            try:
                report["ratings"] = self.push_ratings()
                report["pulled"] = self.pull()
                report["lost"] = self.reconcile_purged()
            except (LinkError, protocol.NotGenuine) as exc:
                report["transient"] += 1
                log.info("sync: status pull failed (%s)", exc)
        self._note_clocks()
        if not (report["transient"] or report["refused"] or self.stopping()):
            report["purged"] = self.purge()
        if self.catalog is not None and not (report["transient"] or report["refused"] or self.stopping()):
            report["catalog"] = self.catalog.update(self)  # a newer catalog release; its troubles are its own
        self.link_failures = self.link_failures + 1 if (report["transient"] or report["refused"]) else 0
        self._set_state("last_cycle", json.dumps({"at": iso(utcnow()), **report}))
        if not (report["transient"] or report["refused"]):
            self._set_state("last_success", iso(utcnow()))  # the heartbeat's last successful sync
        if self.heartbeat is not None and not (report["transient"] or self.stopping()):
            report["heartbeat"] = self.heartbeat.send(self)  # docs/fleet.md; a failure is not the link's
        return report

    def _set_state(self, name: str, value: str) -> None:
        with write_transaction(self.conn):
            self._put_state(name, value)

    def _put_state(self, name: str, value: str) -> None:
        """Within the caller's transaction."""
        self.conn.execute("INSERT INTO sync_state (name, value) VALUES (?, ?) "
                          "ON CONFLICT(name) DO UPDATE SET value = excluded.value", (name, value))

    def pending(self) -> int:
        return outbox.pending_count(self.conn)

    def next_wait(self) -> float:
        """Seconds until the next cycle: full jitter on consecutive link failures, else until a row is due."""
        if self.link_failures:
            return max(self.retry_after,
                       full_jitter(self.link_failures, self.settings.base_delay, self.settings.max_delay, self.rng))
        now = utcnow()
        row = outbox.next_due(self.conn)
        if row[0] is None:
            return self.settings.idle_interval
        due_in = (datetime.fromisoformat(row[0]) - now).total_seconds()
        if due_in > self._longest_wait() or (row[1] and row[1] > iso(now)):
            return 0.0  # set by a clock since corrected backwards: due now
        return max(0.0, min(due_in, self.settings.idle_interval))

    def run(self, stop=None, until_empty: bool = False, max_seconds: float | None = None) -> dict:
        """Cycle until ``stop`` is set, or (until_empty) no dossier is pending, or max_seconds pass."""
        totals: dict = {}
        stop = stop if stop is not None else threading.Event()
        self._stop = stop
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        timer = None
        if max_seconds is not None:
            # At the deadline, cut the exchange under way too: --max-seconds holds on a slow link.
            timer = threading.Timer(max_seconds, self.stop_now, args=(stop,))
            timer.daemon = True
            timer.start()
        try:
            return self._loop(stop, until_empty, deadline, totals)
        finally:
            if timer is not None:
                timer.cancel()

    def stop_now(self, stop) -> None:
        """Stop at once (SIGTERM, the --max-seconds deadline): the exchange under way is cut, its dossiers
        stay pending and are sent again (every request is idempotent)."""
        stop.set()
        self.client.abort()

    def _loop(self, stop, until_empty: bool, deadline: float | None, totals: dict) -> dict:
        while True:
            if stop.is_set():
                return totals
            report = self.cycle()
            for key, value in report.items():
                totals[key] = totals.get(key, 0) + value
            if until_empty and self.pending() == 0:
                return totals
            wait = self.next_wait()
            if deadline is not None:
                if time.monotonic() >= deadline:
                    return totals
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            if stop.wait(wait):
                return totals


class WorkerRunning(RuntimeError):
    """Another sync worker already runs for this station."""


def hold_worker_lock(data_folder: Path):
    """One sync worker per station: an exclusive lock on ``sync-worker.lock`` in the data folder, held
    as long as the returned file stays open (the OS drops it when the process dies, even by SIGKILL).
    Raises WorkerRunning, naming the other process, when the lock is taken."""
    import fcntl
    import os

    path = Path(data_folder) / "sync-worker.lock"
    handle = open(path, "a+", encoding="ascii", opener=lambda name, flags: os.open(name, flags, 0o600))
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        other = handle.read().strip() or "?"
        handle.close()
        raise WorkerRunning(other) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def station_paths(config: dict) -> dict:
    """Where the station keeps what sync needs, all in its data folder."""
    from kiosk.core.config import data_dir

    folder = data_dir(config)
    central = config.get("central", {})
    return {"database": folder / "station.db", "payload_key": folder / "payload.key",
            "station_key": folder / "station.ed25519",
            "central_keys": Path(central.get("keys_file") or folder / "central-keys.json")}


def worker_from_config(config: dict, rng: random.Random | None = None) -> SyncWorker:
    from kiosk.core.db import migrate
    from kiosk.core.sealing import load_or_create_key

    from .keys import load_central_keys, load_or_create_signing_key

    paths = station_paths(config)
    migrate(paths["database"])
    settings = SyncSettings.from_config(config)
    central_signing, _bundle = load_central_keys(paths["central_keys"])
    client = CentralClient(config["central"]["url"], config["station"]["id"],
                           load_or_create_signing_key(paths["station_key"]), central_signing, settings.timeout)
    from .heartbeat import Heartbeat

    worker = SyncWorker(paths["database"], config["station"]["id"], client,
                        load_or_create_key(paths["payload_key"]), settings, rng)
    worker.heartbeat = Heartbeat(config, paths["database"], settings.heartbeat_seconds)
    from .catalog_release import CatalogUpdates
    from .keys import load_catalog_key

    worker.catalog = CatalogUpdates(paths["database"].parent, load_catalog_key(paths["central_keys"]),
                                    settings.blob_chunk_bytes)
    return worker
