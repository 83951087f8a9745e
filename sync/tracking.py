"""Tracking at any station: the web app's one question to the central, about a dossier another station
took (docs/sync.md, "Tracking at any station").

The web app never waits long on the network: one signed GET with a short timeout (3 s), and after a
failure the link is taken as down for a few seconds, so a dead link costs one citizen a 3-second wait,
not every citizen. The answer is believed only when it is the central's signed answer to this very
question (sync/client.py ``CentralClient.track``). A new client each question: the web app's threads
never share a connection.
"""
import threading
import time
from dataclasses import dataclass

from . import protocol
from .client import CentralClient, LinkError, TrackBusy
from .keys import load_central_keys, load_or_create_signing_key
from .worker import station_paths

TRACK_TIMEOUT_S = 3.0        # a citizen at the screen waits at most this long for the central
QUIET_AFTER_FAILURE_S = 15.0  # after the central could not be reached, do not ask again for this long


@dataclass(frozen=True)
class CentralAnswer:
    """``found`` (``dossier``: the central's fields), ``not_found`` (the central knows no such code),
    ``busy`` (the central asks this station to slow down: ``retry_after``), ``unreachable`` (no answer, or
    one that is not the central's: nothing can be said now) or ``not_connected`` (this station has no
    central to ask: not enrolled, or the central's keys not installed)."""
    kind: str
    dossier: dict | None = None
    retry_after: float | None = None


class CentralTracking:
    def __init__(self, config: dict, timeout: float = TRACK_TIMEOUT_S,
                 quiet_after_failure: float = QUIET_AFTER_FAILURE_S):
        self.url = (config.get("central") or {}).get("url") or ""
        self.station_id = config["station"]["id"]
        self.paths = station_paths(config)
        self.timeout, self.quiet_after_failure = timeout, quiet_after_failure
        self._failed_at: float | None = None
        self._lock = threading.Lock()

    def connected(self) -> bool:
        """Whether there is a central to ask: its url, and its keys installed (``kiosk sync trust``)."""
        return bool(self.url) and self.paths["central_keys"].is_file() and self.paths["station_key"].is_file()

    def _client(self) -> CentralClient:
        central_signing, _bundle = load_central_keys(self.paths["central_keys"])
        return CentralClient(self.url, self.station_id, load_or_create_signing_key(self.paths["station_key"]),
                             central_signing, self.timeout)

    def lookup(self, code: str) -> CentralAnswer:
        if not self.connected():
            return CentralAnswer("not_connected")
        with self._lock:
            if self._failed_at is not None and time.monotonic() - self._failed_at < self.quiet_after_failure:
                return CentralAnswer("unreachable")
        try:
            client = self._client()
        except (OSError, ValueError, KeyError):  # keys unreadable: as if there were no central to ask
            return CentralAnswer("not_connected")
        try:
            dossier = client.track(code)
        except TrackBusy as busy:
            return CentralAnswer("busy", retry_after=busy.retry_after)
        except (LinkError, protocol.NotGenuine):
            with self._lock:
                self._failed_at = time.monotonic()
            return CentralAnswer("unreachable")
        finally:
            client.close()
        with self._lock:
            self._failed_at = None
        return CentralAnswer("found", dossier) if dossier is not None else CentralAnswer("not_found")
