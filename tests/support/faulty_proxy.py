"""A fault-injecting, link-shaping HTTP proxy on 127.0.0.1 — a TEST AND BENCHMARK HELPER, never used by a
station or the central in service.

It reads each HTTP/1.1 request from the station, asks a *plan* what to do with it, and then passes it to
the central, or drops the connection before or after the central saw it, resets it (RST) after the central
saw it, cuts the response short, delays it, sends it to the central twice at once on two connections (a
retrying middlebox: with several central processes, two of them take it together), answers 500/429
itself, or answers a 200 that is not the central's (a captive portal, a forged ack).
A ``Link`` shapes both directions in Python (bandwidth, round-trip time, packet loss as retransmission
delays) to stand in for a weak mobile link without tc or network namespaces.
"""
import http.client
import random
import socket
import struct
import threading
import time
from collections import Counter
from dataclasses import dataclass

FAULTS = ("pass", "drop_before", "drop_after", "truncate", "delay", "http500", "http429", "portal200",
          "forged_ack", "http404", "close_after", "reset", "duplicate")

PORTAL_PAGE = (b"<!doctype html><html><head><title>Wi-Fi</title></head><body><h1>Dang nhap Wi-Fi mien phi</h1>"
               b"<form><button>Ket noi</button></form></body></html>")
FORGED_ACK = (b'{"document":{"type":"dvc-central-ack/1","central_code":"FAKE-0001","submission_id":"x"},'
              b'"signature":"AAAA"}')


@dataclass
class Link:
    """A shaped link: bits per second, round-trip time in seconds, packet loss probability."""
    bandwidth_bps: float = 64_000
    rtt_s: float = 0.6
    loss: float = 0.05
    mss: int = 1400

    def transfer_time(self, nbytes: int, rng: random.Random) -> float:
        """One-way time for ``nbytes``: half the RTT, serialisation, and a retransmission timeout (at least
        200 ms plus an RTT, as Linux) for each lost segment."""
        segments = max(1, -(-nbytes // self.mss))
        lost = sum(1 for _ in range(segments) if rng.random() < self.loss)
        return self.rtt_s / 2 + (nbytes + 40 * segments) * 8 / self.bandwidth_bps + lost * (0.2 + self.rtt_s)


class FaultMix:
    """A plan that picks a fault at random with the given weights (seeded: a failing run can be replayed)."""

    def __init__(self, weights: dict[str, float], seed: int = 0):
        unknown = set(weights) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults: {sorted(unknown)}")
        self.names, self.weights = list(weights), list(weights.values())
        self.rng = random.Random(seed)

    def __call__(self, index: int, method: str, path: str) -> str:
        return self.rng.choices(self.names, self.weights)[0]


class Script:
    """A plan that applies the listed faults to the first requests in order, then passes everything."""

    def __init__(self, faults: list[str]):
        self.faults = list(faults)

    def __call__(self, index: int, method: str, path: str) -> str:
        return self.faults[index] if index < len(self.faults) else "pass"


def _response(status: int, reason: str, body: bytes, headers: dict | None = None, close: bool = False) -> bytes:
    head = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class FaultyProxy:
    def __init__(self, upstream_port: int, plan=None, link: Link | None = None, seed: int = 0,
                 delay_s: float = 0.3, retry_after: str = "1", port: int = 0):
        self.upstream_port = upstream_port
        self.plan = plan or (lambda *_: "pass")
        self.link = link
        self.rng = random.Random(seed)
        self.delay_s, self.retry_after = delay_s, retry_after
        self.faults: Counter = Counter()        # what the plan chose
        self.statuses: Counter = Counter()      # "PUT 201": what the central answered, by method
        self.bytes_up = self.bytes_down = 0
        self._index = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", port))  # 0: a free port
        self._listener.settimeout(0.1)  # so stop() is noticed: close() does not wake a blocked accept()
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._clients: set[socket.socket] = set()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="faulty-proxy", daemon=True)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self) -> "FaultyProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5) if self._thread.is_alive() else None
        self._listener.close()
        with self._lock:
            for client in list(self._clients):
                _close(client)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                self._clients.add(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _shape(self, nbytes: int) -> None:
        if self.link is not None:
            with self._lock:
                seconds = self.link.transfer_time(nbytes, self.rng)
            time.sleep(seconds)

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        reader = client.makefile("rb")
        try:
            if self.link is not None:
                time.sleep(self.link.rtt_s)  # the TCP handshake of a new connection
            for _ in range(100_000):  # bounded keep-alive loop
                request = _read_request(reader)
                if request is None:
                    return
                method, path, headers, body, raw_size = request
                with self._lock:
                    index, self._index = self._index, self._index + 1
                    fault = self.plan(index, method, path)
                    self.faults[fault] += 1
                    self.bytes_up += raw_size
                self._shape(raw_size)
                if fault == "drop_before":
                    return
                if fault == "http500":
                    self._send(client, _response(500, "Internal Server Error", b"upstream exploded"))
                    continue
                if fault == "http429":
                    self._send(client, _response(429, "Too Many Requests", b"slow down",
                                                 {"Retry-After": self.retry_after}))
                    continue
                if fault == "http404":  # e.g. a central without the batch endpoint
                    self._send(client, _response(404, "Not Found", b"no such endpoint"))
                    continue
                if fault == "portal200":
                    self._send(client, _response(200, "OK", PORTAL_PAGE, {"Content-Type": "text/html"}))
                    continue
                if fault == "forged_ack":
                    self._send(client, _response(200, "OK", FORGED_ACK, {"Content-Type": "application/json"}))
                    continue
                if fault == "delay":
                    time.sleep(self.delay_s)
                if fault == "duplicate":  # a twin of the request, on its own connection, at the same time
                    twin = threading.Thread(target=self._twin, args=(method, path, headers, body), daemon=True)
                    twin.start()
                try:
                    if upstream is None:
                        upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=30)
                    upstream.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
                    for name, value in headers:
                        upstream.putheader(name, value)
                    upstream.endheaders(body if body else None)
                    resp = upstream.getresponse()
                    resp_body = resp.read()
                    resp_headers = [(k, v) for k, v in resp.getheaders()
                                    if k.lower() not in ("content-length", "transfer-encoding", "connection")]
                    status, reason = resp.status, resp.reason
                    if resp.will_close:
                        upstream.close()
                        upstream = None
                except (OSError, http.client.HTTPException):
                    if upstream is not None:
                        upstream.close()
                        upstream = None
                    self._send(client, _response(502, "Bad Gateway", b"central unreachable", close=True))
                    return
                with self._lock:
                    self.statuses[f"{method} {status}"] += 1
                if fault == "duplicate":
                    twin.join(timeout=35)
                if fault == "drop_after":
                    return
                if fault == "reset":  # the connection reset (RST) instead of the answer
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    client.close()  # no FIN first (as shutdown() would send): closed with the reader, an RST
                    return
                raw = _response(status, reason, resp_body, dict(resp_headers))
                if fault == "truncate":
                    self._send(client, raw[: max(1, len(raw) - max(1, len(resp_body) // 2))])
                    return
                self._send(client, raw)
                if fault == "close_after":  # as a server does with a keep-alive connection left idle
                    return
        except OSError:
            return
        finally:
            if upstream is not None:
                upstream.close()
            reader.close()
            with self._lock:
                self._clients.discard(client)
            _close(client)

    def _twin(self, method: str, path: str, headers, body: bytes) -> None:
        """Send a request to the central once more on a connection of its own; its answer is dropped."""
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=30)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            resp.read()
            with self._lock:
                self.statuses[f"{method} {resp.status} (twin)"] += 1
        except (OSError, http.client.HTTPException):
            pass
        finally:
            conn.close()

    def _send(self, client: socket.socket, data: bytes) -> None:
        with self._lock:
            self.bytes_down += len(data)
        self._shape(len(data))
        client.sendall(data)

    def set_upstream(self, port: int) -> None:
        """Point at a restarted central."""
        self.upstream_port = port


def _read_request(reader):
    line = reader.readline(65537)
    if not line:
        return None
    parts = line.decode("latin-1").split()
    if len(parts) != 3:
        return None
    method, path, _version = parts
    headers, size = [], len(line)
    for _ in range(200):
        raw = reader.readline(65537)
        size += len(raw)
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
    body = reader.read(length) if length else b""
    if len(body) < length:
        return None
    return method, path, headers, body, size + len(body)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
