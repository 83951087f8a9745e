"""The status feed when nothing changed: a station's conditional pull answered 304 by a small WSGI
middleware in front of the central's Flask app, without a database read (docs/sync.md, "Conditional pull").

Two parts:

- ``HeadBoard``: a memory-mapped file in the central's data folder (``feed-heads``, 0600), shared by every
  central process on the host (gunicorn workers, the CLI, a USB import). It holds, per station, an upper
  bound of its latest change number (``stations.last_change``), raised by the store *before* each change
  commits; the store's identity (a digest of store id and generation); and a *stations generation*, bumped
  after every enrolment and revocation so each process drops the station keys it cached. A slot a failed
  commit left too high costs a database read, never a missed change.
- ``ConditionalFeed``: the middleware. A ``GET /api/v1/stations/{id}/changes?since=N&limit=L`` carrying
  ``If-None-Match: "<store_id>/<generation>/<N>"`` (protocol.feed_tag) from a station whose key it holds in
  memory, correctly signed, whose board slot holds exactly N, under the store identity the tag names, is
  answered ``304 Not Modified`` (no body). Anything else goes on to the Flask view, which reads the
  database as before (and answers 304 itself when the database says nothing changed).

File layout (little-endian 64-bit words): word 0 magic ``DVCFEED1``, 1 version, 2 capacity (slots, a
power of two), 3 stations generation, 4 store identity digest, 5-7 reserved; then ``capacity`` slots of two
words: a 64-bit hash of the station id (0: empty) and the head. Slots are found by linear probing from the
hash (at most MAX_PROBES); a slot once given to a station keeps it while any process has the file open.

Start: the first process to open the board (no other holds ``feed-heads.live``) rebuilds it exactly from
the database (``SELECT station_id, last_change FROM stations``), so a database put back while the central
was stopped is never answered from old slots; a process joining live ones only raises slots to what the
database holds. Writers take an exclusive ``flock`` on the file (slot raises, inserts, generation bumps);
readers take no lock: each word is one aligned 8-byte load or store.
"""
import fcntl
import hashlib
import json
import logging
import mmap
import os
import random
import re
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path

from . import protocol
from .keys import ed25519_public

log = logging.getLogger("sync.central")

FILE_NAME = "feed-heads"
LIVE_NAME = "feed-heads.live"
MAGIC = int.from_bytes(b"DVCFEED1", "little")
VERSION = 1
HEADER_WORDS = 8
W_MAGIC, W_VERSION, W_CAPACITY, W_STATIONS, W_IDENTITY = range(5)
MIN_CAPACITY = 1 << 16       # slots (16 bytes each: 1 MiB); grown at a cold start to twice the stations
MAX_PROBES = 64              # slots looked at from a station's home slot; past them it has no slot (DB reads)
KEY_TTL_S = 300.0            # a cached station key is read again after at most this long (a backstop)
MAX_CACHED = 200_000         # station keys one process keeps in memory


def station_hash(station_id: str) -> int:
    """The 64-bit hash that names a station's slot (never 0: 0 marks an empty slot)."""
    return int.from_bytes(hashlib.blake2b(station_id.encode("utf-8", "surrogatepass"), digest_size=8,
                                          person=b"dvc-feed-slot").digest(), "little") or 1


def identity_digest(identity: dict) -> int:
    """The store identity ({"store_id", "generation"}) as one 64-bit word (never 0: 0 is "not set")."""
    text = f"{identity['store_id']}/{int(identity['generation'])}"
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8, person=b"dvc-feed-store").digest(),
                          "little") or 1


def _owner_only(fd: int) -> None:
    if os.fstat(fd).st_mode & 0o077:
        os.fchmod(fd, 0o600)


class HeadBoard:
    """The shared file of station heads, identity and stations generation (see the module's docstring)."""

    def __init__(self, path: Path, fd: int, live_fd: int, mm: mmap.mmap, capacity: int):
        self.path, self.capacity, self.mask = path, capacity, capacity - 1
        self._fd, self._live_fd, self._mm = fd, live_fd, mm
        self.words = memoryview(mm).cast("Q")
        self._pid = os.getpid()
        self._lock_fd = fd
        self._thread_lock = threading.Lock()
        self.overflowed = 0  # stations this process could not give a slot to (the table too full near them)
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (board := ref()) is not None and board._after_fork())

    # -- opening --------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, data_dir, store) -> "HeadBoard":
        """Open (or make) the board of ``data_dir`` for ``store``: rebuilt exactly from the database when no
        other process has it open, else joined and raised to the database's heads; the store's identity is
        written either way."""
        data_dir = Path(data_dir)
        path = data_dir / FILE_NAME
        live_fd = os.open(data_dir / LIVE_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fd = -1
        try:
            _owner_only(live_fd)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            _owner_only(fd)
            fcntl.flock(fd, fcntl.LOCK_EX)  # one process starts at a time; writers wait meanwhile
            try:
                try:
                    fcntl.flock(live_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    alone = True
                except BlockingIOError:
                    alone = False
                heads = store.station_heads()  # a plain read: never waits on a writer (who may wait on us)
                capacity = _valid_capacity(fd)
                if alone or capacity is None:
                    if not alone:
                        raise RuntimeError(f"{path}: not a feed heads file, and central processes have it open")
                    capacity = MIN_CAPACITY
                    while capacity < 2 * len(heads):
                        capacity <<= 1
                    os.ftruncate(fd, 0)  # every slot zero: rebuilt below from the database alone
                    os.ftruncate(fd, 8 * (HEADER_WORDS + 2 * capacity))
                mm = mmap.mmap(fd, 8 * (HEADER_WORDS + 2 * capacity), mmap.MAP_SHARED,
                               mmap.PROT_READ | mmap.PROT_WRITE)
                board = cls(path, fd, live_fd, mm, capacity)
                words = board.words
                if alone:
                    words[W_VERSION], words[W_CAPACITY], words[W_STATIONS] = VERSION, capacity, 1
                    words[W_MAGIC] = MAGIC
                for station_id, head in heads:
                    board._raise(station_hash(station_id), int(head or 0))
                words[W_IDENTITY] = identity_digest(store.identity())
                # Shared from now on, converted before the start lock is let go, so no other starter can take
                # it exclusively in between and believe itself alone.
                fcntl.flock(live_fd, fcntl.LOCK_SH)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except BaseException:
            for each in (fd, live_fd):
                if each >= 0:
                    os.close(each)
            raise
        if board.overflowed:
            log.warning("feed: %d stations have no slot in %s (they are answered from the database); it grows "
                        "at the next start of the central with no other process running", board.overflowed, path)
        return board

    def close(self) -> None:
        """Let the file go (the slots stay for the other processes)."""
        words, self.words = self.words, None
        if words is not None:
            words.release()
            self._mm.close()
            if self._lock_fd != self._fd:
                os.close(self._lock_fd)
            os.close(self._fd)
            os.close(self._live_fd)

    def _after_fork(self) -> None:
        """In a forked child (gunicorn --preload): a lock of its own (flock is per open file, shared with
        the parent after a fork); the liveness lock stays shared with the parent, which is what it means."""
        self._thread_lock = threading.Lock()
        self._pid = os.getpid()
        if self.words is not None:
            self._lock_fd = os.open(self.path, os.O_RDWR | os.O_CLOEXEC)

    # -- writing (under the file lock) ------------------------------------------------------------------------
    @contextmanager
    def _locked(self):
        if self._pid != os.getpid():  # forked without the at-fork hook running (it always should)
            self._after_fork()
        with self._thread_lock:  # flock does not keep this process's own threads apart
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _raise(self, key: int, head: int) -> int:
        """The slot of ``key`` (given one if it has none) raised to at least ``head``; -1 when the table has
        no room near its home slot. Called with the file lock held (or during the start, under it)."""
        words, mask = self.words, self.mask
        home = key & mask
        for probe in range(MAX_PROBES):
            index = (home + probe) & mask
            at = HEADER_WORDS + 2 * index
            found = words[at]
            if found == key:
                if words[at + 1] < head:
                    words[at + 1] = head
                return index
            if found == 0:
                words[at + 1] = head  # the head first: a reader that sees the key sees a head at least this
                words[at] = key
                return index
        self.overflowed += 1
        return -1

    def raise_head(self, station_id: str, seq: int) -> None:
        """Before a change numbered ``seq`` of the station commits: its slot holds at least ``seq``."""
        with self._locked():
            self._raise(station_hash(station_id), seq)

    def stations_changed(self) -> None:
        """After an enrolment, a re-key or a revocation commits: every process reads station keys again."""
        with self._locked():
            self.words[W_STATIONS] += 1

    def set_identity(self, identity: dict) -> None:
        """After the store's identity changed (mark_restored): no 304 for a tag of the identity before."""
        with self._locked():
            self.words[W_IDENTITY] = identity_digest(identity)

    # -- reading (no lock) ------------------------------------------------------------------------------------
    def stations_generation(self) -> int:
        return self.words[W_STATIONS]

    def identity(self) -> int:
        return self.words[W_IDENTITY]

    def find(self, key: int) -> int:
        """The slot of the station with this hash, or -1 when it has none."""
        words, mask = self.words, self.mask
        home = key & mask
        for probe in range(MAX_PROBES):
            index = (home + probe) & mask
            found = words[HEADER_WORDS + 2 * index]
            if found == key:
                return index
            if found == 0:
                return -1
        return -1

    def head_at(self, index: int) -> int:
        return self.words[HEADER_WORDS + 2 * index + 1]

    def head(self, station_id: str) -> int | None:
        """An upper bound of the station's latest change number, or None when it has no slot."""
        index = self.find(station_hash(station_id))
        return None if index < 0 else self.head_at(index)


def _valid_capacity(fd: int) -> int | None:
    """The capacity of a well-formed board file, or None (empty, another format, a wrong size)."""
    size = os.fstat(fd).st_size
    if size < 8 * HEADER_WORDS:
        return None
    head = os.pread(fd, 8 * HEADER_WORDS, 0)
    words = memoryview(head).cast("Q")
    capacity = words[W_CAPACITY]
    if (words[W_MAGIC], words[W_VERSION]) != (MAGIC, VERSION) or capacity < 1 or capacity & (capacity - 1) \
            or size != 8 * (HEADER_WORDS + 2 * capacity):
        return None
    return capacity


def open_board(data_dir, store) -> HeadBoard:
    return HeadBoard.open(data_dir, store)


# -- the middleware -------------------------------------------------------------------------------------------
_FEED_PATH = re.compile(r"/api/v1/stations/([A-Za-z0-9._-]{1,64})/changes")
_FEED_QUERY = re.compile(r"since=(0|[1-9][0-9]{0,17})&limit=([0-9]{1,6})")


@dataclass
class _Known:
    public_key: object
    revoked: bool
    key: int
    index: int


class ConditionalFeed:
    """WSGI middleware: an idle station's conditional status pull answered 304 from memory and the board;
    everything else passed to ``app`` (the Flask app's wsgi_app). ``headers`` are added to its own answers
    (the central's security headers). ``answered`` / ``refused`` / ``passed`` count what it did."""

    def __init__(self, app, central, headers=(), key_ttl: float = KEY_TTL_S):
        self.app, self.central = app, central
        self.headers = list(headers)
        self.key_ttl = float(key_ttl)
        self._known: dict[str, _Known] = {}
        self._keys_generation, self._keys_expire = -1, 0.0
        self._identity: tuple[dict, str, int] | None = None
        self._identity_read_at = -1e9
        self.answered = self.refused = self.passed = 0

    def __call__(self, environ, start_response):
        if "HTTP_IF_NONE_MATCH" in environ and environ.get("REQUEST_METHOD") == "GET":
            answer = self.answer(environ)
            if answer is not None:
                status, headers, body = answer
                start_response(status, headers)
                return [body] if body else []
            self.passed += 1
        return self.app(environ, start_response)

    def _store_tag(self) -> tuple[str, int]:
        """("<store_id>/<generation>", its digest) of the store this process serves, computed once per identity."""
        identity = self.central.store.identity()
        cached = self._identity
        if cached is None or cached[0] != identity:
            cached = self._identity = (identity, f"{identity['store_id']}/{identity['generation']}",
                                       identity_digest(identity))
        return cached[1], cached[2]

    def _reload_identity(self) -> None:
        """Another process changed the store's identity (``kiosk central mark-restored`` beside a running
        central): read it again (at most once a second), so this process tells stations the new one too."""
        now = time.monotonic()
        if now - self._identity_read_at >= 1.0:
            self._identity_read_at = now
            try:
                self.central.store.reload_identity()
            except Exception:  # noqa: BLE001  (the view answers this request; the next one tries again)
                log.warning("feed: the store's identity could not be read again", exc_info=True)

    def answer(self, environ) -> tuple[str, list, bytes] | None:
        """(status, headers, body) when this request is answered here, else None (the view answers it)."""
        path = environ.get("PATH_INFO", "")
        match = _FEED_PATH.fullmatch(path)
        if match is None:
            return None
        station_id = match.group(1)
        board = getattr(self.central.store, "feed", None)
        if board is None or environ.get("HTTP_X_DVC_STATION") != station_id \
                or environ.get("CONTENT_LENGTH") not in (None, "", "0") or "HTTP_TRANSFER_ENCODING" in environ:
            return None
        query = environ.get("QUERY_STRING", "")
        asked = _FEED_QUERY.fullmatch(query)
        if asked is None:
            return None
        since = asked.group(1)
        store_tag, digest = self._store_tag()
        tag = f'"{store_tag}/{since}"'
        if board.identity() != digest:
            self._reload_identity()
            return None
        if environ["HTTP_IF_NONE_MATCH"] != tag:
            return None  # another store or generation than the station knows: the view tells it which
        known = self._station(station_id, board)
        if known is None or known.revoked:
            return None  # the view refuses it (unknown, revoked) from the database
        headers = {protocol.H_STATION: station_id,
                   protocol.H_TIMESTAMP: environ.get("HTTP_X_DVC_TIMESTAMP", ""),
                   protocol.H_CONTENT: environ.get("HTTP_X_DVC_CONTENT_SHA256", ""),
                   protocol.H_SIGNATURE: environ.get("HTTP_X_DVC_SIGNATURE", "")}
        try:
            protocol.verify_request(known.public_key, headers, "GET", f"{path}?{query}", b"",
                                    max_skew=self.central.max_skew)
        except protocol.AuthError as exc:
            self.refused += 1
            body = json.dumps({"error": exc.code, "message": str(exc)}).encode()
            return (f"{exc.status} {HTTPStatus(exc.status).phrase}",
                    [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *self.headers], body)
        if known.index < 0:
            known.index = board.find(known.key)
        if known.index < 0 or board.head_at(known.index) != int(since):
            return None  # changes after ``since`` (or a collision, a slot a failed commit left high): the view
        self.answered += 1
        return "304 Not Modified", [("ETag", tag), *self.headers], b""

    def _station(self, station_id: str, board: HeadBoard) -> _Known | None:
        """The station's key from memory. Every station's key is read in one query when this process first
        needs one, after an enrolment or a revocation anywhere (the board's stations generation moved) and
        after ``key_ttl`` (a backstop): one read per process per change, not one per station, so a province's
        stations polling a freshly started worker do not each cost it a database read."""
        generation = board.stations_generation()  # before the read: a change after it is seen next time
        now = time.monotonic()
        if self._keys_generation != generation or now >= self._keys_expire:
            self._load_keys(generation, now)
        return self._known.get(station_id)

    def _load_keys(self, generation: int, now: float) -> None:
        known: dict[str, _Known] = {}
        for station in self.central.store.stations()[:MAX_CACHED]:
            try:
                public_key = ed25519_public(station.public_key)
            except ValueError:
                continue  # a damaged key: the view answers that station
            old = self._known.get(station.station_id)
            key = station_hash(station.station_id)
            index = old.index if old is not None and old.key == key else -1
            known[station.station_id] = _Known(public_key, station.revoked_at is not None, key, index)
        self._known = known
        self._keys_generation = generation
        self._keys_expire = now + self.key_ttl * random.uniform(0.5, 1.0)
