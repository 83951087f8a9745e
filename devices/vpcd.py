"""The virtual card side of vsmartcard's vpcd, and a pcscd we start ourselves for tests and benchmarks.

pcscd loads the vpcd driver (/etc/reader.conf.d/vpcd), which listens on TCP port 35963 (0x8C7B) and shows
up as the reader "Virtual PCD 00 00". A virtual card connects there; every message either way is a
2-byte big-endian length and a payload. A 1-byte payload from vpcd is a control: 0 power off, 1 power
on, 2 reset, 4 "send the ATR". Anything longer is a command APDU, answered with the response APDU.
Closing the socket is pulling the card out.
"""
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable

VPCD_HOST = "127.0.0.1"
VPCD_PORT = 35963
VPCD_READER_PREFIX = "Virtual PCD"
POWER_OFF, POWER_ON, RESET, GET_ATR = 0, 1, 2, 4
PCSCD_SOCKET = "/run/pcscd/pcscd.comm"


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        # vpcd writes the length and the payload separately; acknowledging at once keeps its Nagle
        # algorithm from holding the payload for our delayed ACK (40 ms per APDU otherwise).
        if hasattr(socket, "TCP_QUICKACK"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


class VirtualCardLink:
    """A TCP connection to vpcd that hands each APDU to ``on_apdu`` and each power event to ``on_power``.

    ``on_apdu`` returns the response bytes, or None to drop the connection (the card is pulled out).
    """

    def __init__(self, atr: bytes, on_apdu: Callable[[bytes], bytes | None],
                 on_power: Callable[[int], None] | None = None, on_close: Callable[[], None] | None = None):
        self.atr = atr
        self.on_close = on_close
        self.on_apdu = on_apdu
        self.on_power = on_power or (lambda event: None)
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.closed = threading.Event()

    def connect(self, host: str = VPCD_HOST, port: int = VPCD_PORT, timeout_s: float = 5.0) -> "VirtualCardLink":
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                sock = socket.create_connection((host, port), timeout=1.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise ConnectionError(f"vpcd is not listening on {host}:{port}; is pcscd running "
                                          "with the vpcd driver?") from None
                time.sleep(0.05)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self.connected.set()
        self._thread = threading.Thread(target=self._serve, name="virtual-card", daemon=True)
        self._thread.start()
        return self

    def _send(self, payload: bytes) -> None:
        sock = self._sock
        if sock is None:  # the card was taken out while it was answering: the answer goes nowhere
            raise OSError("the card has left the reader")
        sock.sendall(struct.pack(">H", len(payload)) + payload)

    def _serve(self) -> None:
        sock = self._sock
        try:
            while sock is not None:
                header = _recv_exact(sock, 2)
                if header is None:
                    break
                (length,) = struct.unpack(">H", header)
                payload = _recv_exact(sock, length)
                if payload is None:
                    break
                if length == 1:
                    event = payload[0]
                    if event == GET_ATR:
                        self._send(self.atr)
                    else:
                        self.on_power(event)
                    continue
                response = self.on_apdu(payload)
                if response is None:
                    break
                self._send(response)
        except OSError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        with self._lock:
            sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
            if self.on_close is not None:
                self.on_close()
        self.closed.set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)


def vpcd_reader_listed() -> bool:
    """Whether pcscd is up and lists the vpcd reader. (We do not probe the vpcd port: to vpcd, a connection
    there is a card being inserted.)"""
    from smartcard.System import readers
    try:
        return any(str(r).startswith(VPCD_READER_PREFIX) for r in readers())
    except Exception:  # pyscard raises its own errors when there is no daemon
        return False


class PcscdProcess:
    """Start pcscd in the foreground for the duration of a test run or benchmark, and stop it after.

    We never pass -a (APDU logging): even encrypted traffic stays out of logs. Raises RuntimeError with a
    plain explanation when pcscd cannot start.
    """

    def __init__(self, timeout_s: float = 10.0):
        self.timeout_s = timeout_s
        self.process: subprocess.Popen | None = None

    def start(self) -> "PcscdProcess":
        binary = shutil.which("pcscd") or ("/usr/sbin/pcscd" if os.path.exists("/usr/sbin/pcscd") else None)
        if binary is None:
            raise RuntimeError("pcscd is not installed (Debian package pcscd)")
        if not os.path.exists("/etc/reader.conf.d/vpcd"):
            raise RuntimeError("the vpcd driver is not configured (Debian package vsmartcard-vpcd)")
        if _pcscd_pid_alive():
            raise RuntimeError("a pcscd is already running (see /run/pcscd/pcscd.pid); stop it first")
        # A socket file left by a killed daemon makes the new one refuse to start.
        if os.path.exists(PCSCD_SOCKET) and not _pcscd_pid_alive():
            try:
                os.unlink(PCSCD_SOCKET)
            except OSError:
                pass
        self.process = subprocess.Popen([binary, "--foreground", "--error"], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                out = self.process.stdout.read().decode(errors="replace") if self.process.stdout else ""
                raise RuntimeError(f"pcscd exited at start (code {self.process.returncode}): {out.strip()[-500:]}")
            if os.path.exists(PCSCD_SOCKET) and vpcd_reader_listed():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pcscd did not come up within {self.timeout_s} s")

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stdout:
            proc.stdout.close()

    def __enter__(self) -> "PcscdProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _pcscd_pid_alive() -> bool:
    try:
        pid = int(open("/run/pcscd/pcscd.pid").read().strip())
        os.kill(pid, 0)
        return True
    except (OSError, ValueError):
        return False
