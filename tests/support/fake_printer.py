"""A FAKE receipt printer for tests, benchmarks and demos: never used for a citizen's receipt.

:class:`FakeNetworkPrinter` listens on 127.0.0.1 (a free port), records every byte it is sent and
answers ESC/POS real-time status queries (``DLE EOT n``) the way a real printer does, from a state the
test chooses: ready, paper low, paper out, cover open, offline (in error), or silent (takes the bytes
and never answers). For a printer that is switched off, point the station at :func:`unused_port`.

It understands just enough of ESC/POS to find command boundaries, so that a ``10 04`` pair inside the
data of a bit image is not taken for a status query (a real printer parses the same way). It answers a
status query only once it has read everything sent before it, as a real printer does.

Two FAKE faults: ``rate_bps`` makes it a slow printer (it reads at most that many bytes a second, so the
sender's data waits in the sockets' buffers, as with a thermal printer printing a raster image), and
``drop_after_bytes`` makes it drop the next connection abruptly (a reset) once that connection has sent it
that many bytes, as a printer switched off or unplugged in the middle of a job; it then works again.
"""
import socket
import struct
import threading
import time

STATES = ("ok", "paper_low", "paper_out", "cover_open", "offline", "silent")
DLE, ESC, GS = 0x10, 0x1B, 0x1D
EOT = 0x04


def status_byte(n: int, state: str) -> int:
    """The answer to ``DLE EOT n`` of a printer in ``state`` (ESC/POS: bits 1 and 4 are always set)."""
    answer = 0x12
    stopped = state in ("paper_out", "cover_open", "offline")
    if n == 1 and stopped:
        answer |= 0x08  # offline
    elif n == 2:
        answer |= {"cover_open": 0x04, "paper_out": 0x20, "offline": 0x40}.get(state, 0)
    elif n == 4:
        answer |= {"paper_low": 0x0C, "paper_out": 0x6C}.get(state, 0)
    return answer


def unused_port() -> int:
    """A port on 127.0.0.1 where nothing listens: connecting to it is refused, like a switched-off printer."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class FakeNetworkPrinter:
    """A fake port-9100 printer on 127.0.0.1. Use as a context manager::

        with FakeNetworkPrinter(state="ok") as printer:
            print_receipt(printer.config(), receipt)  # kiosk.receipts.print_receipt
            printer.data  # every byte received
    """

    def __init__(self, state: str = "ok", *, after_job: str | None = None, answer_delay_s: float = 0.0,
                 rate_bps: float | None = None, drop_after_bytes: int | None = None, port: int = 0):
        if state not in STATES or (after_job is not None and after_job not in STATES):
            raise ValueError(f"state must be one of {', '.join(STATES)}")
        self.state = state
        self.after_job = after_job  # the state to fall into once a job has been cut (paper ran out...)
        self.answer_delay_s = answer_delay_s  # a slow printer: each status answer comes this late
        self.rate_bps = rate_bps  # FAKE slow printer: reads at most this many bytes a second
        self.drop_after_bytes = drop_after_bytes  # FAKE fault: reset the next connection after this many bytes
        self.drops = 0  # connections dropped that way
        self.jobs = 0  # cut commands seen
        self.status_queries: list[int] = []
        self.connections = 0
        self._data = bytearray()
        self._received: list[bytearray] = []  # per connection, in the order they came
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self.port = port  # 0: a free port, chosen at start()

    # -- life cycle -------------------------------------------------------------------------------
    def start(self) -> "FakeNetworkPrinter":
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(8)
        self._listener.settimeout(0.05)
        self.port = self._listener.getsockname()[1]
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=2)
        if self._listener is not None:
            self._listener.close()

    def __enter__(self) -> "FakeNetworkPrinter":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def config(self, **printer) -> dict:
        """Station-file overrides that point the station at this printer (merge with ``load_station``)."""
        return {
            "devices": {"printer": "network"},
            "printer": {"host": "127.0.0.1", "port": self.port, "paper_mm": 80, "timeout_s": 1.0, **printer},
        }

    @property
    def data(self) -> bytes:
        with self._lock:
            return bytes(self._data)

    @property
    def received(self) -> list[bytes]:
        """What each connection sent, one item per connection (a dropped job's bytes stop short)."""
        with self._lock:
            return [bytes(part) for part in self._received]

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._received.clear()
            self.status_queries.clear()
            self.jobs = 0

    # -- the printer ------------------------------------------------------------------------------
    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="fake-printer")
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.05)
        pending = bytearray()
        with self._lock:
            mine = bytearray()
            self._received.append(mine)
        taken = 0  # bytes of this connection
        next_read = time.monotonic()  # the slow printer's pace
        with conn:
            while not self._stopping.is_set():
                rate = self.rate_bps
                if rate:  # a FAKE slow printer: small reads, no faster than rate_bps on average
                    time.sleep(max(0.0, next_read - time.monotonic()))
                try:
                    chunk = conn.recv(max(1, int(rate / 50)) if rate else 65536)
                except socket.timeout:
                    next_read = time.monotonic()
                    continue
                except OSError:
                    return
                if not chunk:
                    return
                if rate:
                    next_read = max(next_read, time.monotonic() - 0.05) + len(chunk) / rate
                drop_at = self.drop_after_bytes
                dropping = drop_at is not None and taken + len(chunk) >= drop_at
                if dropping:
                    chunk = chunk[: drop_at - taken]
                taken += len(chunk)
                with self._lock:
                    self._data += chunk
                    mine += chunk
                pending += chunk
                consumed = self._interpret(pending, conn)
                del pending[:consumed]
                if dropping:  # a FAKE fault: the printer goes away mid-job (a reset, not a goodbye)
                    self.drop_after_bytes = None
                    self.drops += 1
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return

    def _interpret(self, buf: bytearray, conn: socket.socket) -> int:
        """Walk the commands in ``buf``; answer status queries; return how many bytes were complete."""
        i, size = 0, len(buf)
        while i < size:
            byte = buf[i]
            if byte == DLE:
                if size - i < 3:
                    break
                if buf[i + 1] == EOT:
                    self._answer(buf[i + 2], conn)
                    i += 3
                    continue
            elif byte == GS:
                if size - i < 3:
                    break
                command = bytes(buf[i + 1 : i + 3])
                if command == b"v0":  # GS v 0 m xL xH yL yH d1...dk
                    if size - i < 8:
                        break
                    total = 8 + (buf[i + 4] + 256 * buf[i + 5]) * (buf[i + 6] + 256 * buf[i + 7])
                    if size - i < total:
                        break
                    i += total
                    continue
                if command[:1] == b"(" and command[1:] in (b"k", b"L"):  # GS ( k / GS ( L pL pH ...
                    if size - i < 5:
                        break
                    total = 5 + buf[i + 3] + 256 * buf[i + 4]
                    if size - i < total:
                        break
                    i += total
                    continue
                if command[:1] == b"V":  # GS V m [n]: cut
                    total = 4 if buf[i + 2] in (65, 66, 97, 98, 103, 104) else 3
                    if size - i < total:
                        break
                    self.jobs += 1
                    if self.after_job:
                        self.state = self.after_job
                    i += total
                    continue
            elif byte == ESC:
                if size - i < 2:
                    break
                if buf[i + 1] == ord("*"):  # ESC * m nL nH d1...dk
                    if size - i < 5:
                        break
                    per_column = 3 if buf[i + 2] in (32, 33) else 1
                    total = 5 + (buf[i + 3] + 256 * buf[i + 4]) * per_column
                    if size - i < total:
                        break
                    i += total
                    continue
            i += 1
        return i

    def _answer(self, n: int, conn: socket.socket) -> None:
        self.status_queries.append(n)
        if self.state == "silent":
            return
        if self.answer_delay_s:
            time.sleep(self.answer_delay_s)
        try:
            conn.sendall(bytes([status_byte(n, self.state)]))
        except OSError:
            pass
