"""A simulated CCCD chip: it holds a card profile (see devices/card_profile.py) and answers APDUs like an
eMRTD with BAC and 3DES secure messaging. It plugs into pcscd through vpcd, so the reader code talks to
it over the real PC/SC path.

    sim = CardSimulator(profile).connect()      # the card is on the reader
    sim.inject("remove", after=5)               # pull it out when the 5th APDU from now arrives
    sim.pull_out()                              # or now

Faults for tests: "remove" (drop the connection instead of answering), "garbage" (random bytes),
"truncate" (half of the answer), "short" (a single byte where a status word belongs), "bad_mac" (a
protected answer with a wrong MAC), "plain_error" (the chip drops secure messaging and answers 6988),
"silent" (the chip stops answering, this and every later APDU, until the card is taken out).
"""
import json
import os
import threading
import time
from datetime import date
from pathlib import Path

from devices import bac, card_tlv, pace
from devices.card_errors import CardDataError, CardError
from devices.mrz import bac_document_number, mrz_key_string
from devices.secure_messaging import SecureMessagingError, protect_response, unprotect_command
from devices.vpcd import POWER_OFF, RESET, VPCD_HOST, VPCD_PORT, VirtualCardLink

EMRTD_AID = bytes.fromhex("A0000002471001")
SW_OK = 0x9000
SW_WRONG_LENGTH = 0x6700
SW_SECURITY = 0x6982
SW_SM_INCORRECT = 0x6988
SW_AUTH_FAILED = 0x6300
SW_AUTH_BLOCKED = 0x6983
SW_NOT_FOUND = 0x6A82
SW_WRONG_P1P2 = 0x6B00
SW_INS = 0x6D00
SW_CLA = 0x6E00
SW_CONDITIONS = 0x6985
# Short file identifiers of the eMRTD files, for READ BINARY with P1 = 0x80 | SFI.
SFI_TO_FID = {0x1E: 0x011E, 0x01: 0x0101, 0x02: 0x0102, 0x0D: 0x010D, 0x1D: 0x011D}
FAULTS = ("remove", "garbage", "truncate", "short", "bad_mac", "plain_error", "silent")


def load_profile(profile: dict | str | Path) -> dict:
    if isinstance(profile, dict):
        return profile
    return json.loads(Path(profile).read_text(encoding="utf-8"))


def _sw(code: int) -> bytes:
    return code.to_bytes(2, "big")


class CardSimulator:
    """A virtual CCCD; thread-safe enough for one reader at a time, like a real chip."""

    # pcscd polls the virtual reader about every 0.4 s. When a powered card (one a reader is talking to)
    # leaves, vpcd 0.8 notices it inside a failed transmit, and a card put back before pcscd's next polls
    # is not seen at all. A hand cannot swap cards that fast either, so the next card waits until this
    # long after such a removal.
    REINSERT_DELAY_S = 0.9
    _last_removal = 0.0

    def __init__(self, profile: dict | str | Path):
        profile = load_profile(profile)
        key = profile["key"]
        expiry = date.fromisoformat(key["expiry_date"]) if key.get("expiry_date") else None
        mrz_info = mrz_key_string(bac_document_number(key["number"]), date.fromisoformat(key["birth_date"]), expiry)
        self._bac_keys = bac.BacKeys.from_mrz_info(mrz_info)
        self.files = {int(fid, 16): bytes.fromhex(content) for fid, content in profile["files"].items()}
        # PACE passwords: the CAN (last 6 digits of the number unless the profile says otherwise) and the MRZ.
        self._pace_passwords = {pace.PASSWORD_CAN: (key.get("can") or key["number"][-6:]).encode("ascii"),
                                pace.PASSWORD_MRZ: pace.mrz_password(mrz_info)}
        self._pace_infos = []
        if 0x011C in self.files:
            try:
                self._pace_infos = pace.parse_card_access(self.files[0x011C])
            except CardError:  # unparseable, or no ecdsa package: a BAC-only chip
                self._pace_infos = []
        self.auth_tries = profile.get("auth_tries")  # None: the chip never blocks
        self.wrong_keys = 0  # kept across presentations, like a chip's retry counter
        self.atr = bytes.fromhex(profile.get("atr") or "3B8880010000000000000000")
        self.max_read = profile.get("max_read") or 0xDF
        self.apdu_count = 0
        self._powered = False
        self._faults: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        self._link: VirtualCardLink | None = None
        self._silent = threading.Event()  # set while the chip has gone quiet
        self._gone = threading.Event()  # set when the card leaves the reader
        self.latency_s = float(profile.get("latency_ms") or 0) / 1000  # a slower reader, for benchmarks
        self._reset_state()

    # --- connection ----------------------------------------------------------------------------------

    def connect(self, host: str = VPCD_HOST, port: int = VPCD_PORT, timeout_s: float = 5.0) -> "CardSimulator":
        """Put the card on the virtual reader (a background thread answers APDUs)."""
        self._reset_state()
        self._silent.clear()
        self._gone.clear()
        wait = CardSimulator._last_removal + self.REINSERT_DELAY_S - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._link = VirtualCardLink(self.atr, self._on_apdu, self._on_power,
                                     on_close=self._on_close).connect(host, port, timeout_s)
        return self

    def _on_close(self) -> None:
        self._gone.set()
        if self._powered:
            CardSimulator._last_removal = time.monotonic()

    def pull_out(self) -> None:
        """Take the card off the reader now."""
        self._gone.set()
        if self._link is not None:
            self._link.close()
            self._link.join(2)

    close = pull_out

    @property
    def present(self) -> bool:
        return self._link is not None and not self._link.closed.is_set()

    def serve_forever(self) -> None:
        """Block until the connection ends (for the CLI)."""
        if self._link is not None:
            self._link.closed.wait()

    def inject(self, fault: str, after: int = 1) -> None:
        """Make the ``after``-th APDU from now fail in the given way (see module doc)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; one of {FAULTS}")
        with self._lock:
            self._faults.append((self.apdu_count + after, fault))

    # --- the chip --------------------------------------------------------------------------------------

    def _reset_state(self) -> None:
        self._selected_app = False
        self._challenge: bytes | None = None
        self._session: bac.SessionKeys | None = None
        self._current: int | None = None
        self._pace: pace.PaceChip | None = None

    def _on_power(self, event: int) -> None:
        self._powered = event != POWER_OFF
        if event in (POWER_OFF, RESET):
            self._reset_state()

    def _on_apdu(self, apdu: bytes) -> bytes | None:
        with self._lock:
            self.apdu_count += 1
            fault = next((f for n, f in self._faults if n == self.apdu_count), None)
            self._faults = [(n, f) for n, f in self._faults if n > self.apdu_count]
        if fault == "silent":
            self._silent.set()
        if self._silent.is_set():
            self._gone.wait()  # a chip that hangs: no answer until it leaves the reader
            return None
        if self.latency_s:
            time.sleep(self.latency_s)
        if fault == "remove":
            return None
        if fault == "plain_error":
            self._session = None
            return _sw(SW_SM_INCORRECT)
        response = self.process(apdu)
        if fault == "garbage":
            return os.urandom(max(3, len(response)))
        if fault == "short":
            return response[:1]
        if fault == "truncate":
            return response[: max(2, len(response) // 2)]  # PC/SC itself never passes on less than a status word
        if fault == "bad_mac" and len(response) > 12:
            return response[:-3] + bytes([response[-3] ^ 0x01]) + response[-2:]
        return response

    def process(self, apdu: bytes) -> bytes:
        """Answer one command APDU (also usable without vpcd, for unit tests)."""
        if len(apdu) < 4:
            return _sw(0x6700)
        cla = apdu[0]
        if cla & 0x0C == 0x0C:
            return self._process_protected(apdu)
        if cla not in (0x00, 0x10):
            return _sw(SW_CLA)
        ins, p1, p2 = apdu[1], apdu[2], apdu[3]
        data = apdu[5:5 + apdu[4]] if len(apdu) > 5 else b""
        if ins == 0x86:
            return self._general_authenticate(cla, data)
        if cla != 0x00:
            return _sw(SW_CLA)
        if self._session is not None:
            # A plain command ends the secure messaging session, as on a real chip.
            self._session = None
            if ins not in (0xA4, 0x84):
                return _sw(SW_SECURITY)
        if ins == 0xA4 and p1 == 0x04:
            self._selected_app = data == EMRTD_AID
            self._challenge = None
            return _sw(SW_OK if self._selected_app else SW_NOT_FOUND)
        if ins == 0xA4 and p1 == 0x00 and data == b"\x3F\x00":
            self._selected_app = False
            return _sw(SW_OK)
        if ins == 0xB0 and p1 == 0x9C and not self._selected_app:
            # EF.CardAccess is readable by anyone, by its short file identifier, from the MF.
            if 0x011C not in self.files:
                return _sw(SW_NOT_FOUND)
            le = (apdu[4] or 256) if len(apdu) == 5 else 256
            if le > self.max_read:
                return _sw(SW_WRONG_LENGTH)
            return self.files[0x011C][p2:p2 + le] + _sw(SW_OK)
        if ins == 0x22 and p1 == 0xC1 and p2 == 0xA4:
            return self._mse_set_at(data)
        if not self._selected_app:
            return _sw(SW_CONDITIONS if ins in (0x84, 0x82) else SW_SECURITY)
        if ins == 0x84:
            le = apdu[4] if len(apdu) == 5 else 0
            if le != 8:
                return _sw(SW_WRONG_LENGTH)
            self._challenge = os.urandom(8)
            return self._challenge + _sw(SW_OK)
        if ins == 0x82:
            challenge, self._challenge = self._challenge, None
            if self._blocked():
                return _sw(SW_AUTH_BLOCKED)
            if challenge is None:
                return _sw(SW_CONDITIONS)
            answer = bac.ic_answer(self._bac_keys, data, challenge)
            if answer is None:
                self.wrong_keys += 1
                return _sw(SW_AUTH_FAILED)
            response, self._session = answer
            return response + _sw(SW_OK)
        if ins in (0xA4, 0xB0):
            return _sw(SW_SECURITY)  # files need BAC first
        return _sw(SW_INS)

    def _blocked(self) -> bool:
        return self.auth_tries is not None and self.wrong_keys >= self.auth_tries

    def _mse_set_at(self, data: bytes) -> bytes:
        self._pace = None
        if self._blocked():
            return _sw(SW_AUTH_BLOCKED)
        try:
            items = {t.tag: t.value for t in card_tlv.parse_all(data)}
        except CardDataError:
            return _sw(0x6A80)
        info = next((i for i in self._pace_infos if i.oid == items.get(0x80)
                     and (0x84 not in items or items[0x84] == bytes([i.parameter_id]))), None)
        ref = items.get(0x83, b"\x00")[0] if items.get(0x83) else 0
        if info is None or ref not in self._pace_passwords:
            return _sw(0x6A80)
        self._pace = pace.PaceChip(info, self._pace_passwords[ref])
        return _sw(SW_OK)

    def _general_authenticate(self, cla: int, data: bytes) -> bytes:
        chip = self._pace
        if chip is None:
            return _sw(SW_CONDITIONS)
        out, sw = chip.answer(data)
        if sw == SW_AUTH_FAILED:
            self.wrong_keys += 1
        if sw != SW_OK or cla == 0x00:
            self._pace = None
        if sw == SW_OK and cla == 0x00:
            if chip.session is None:
                return _sw(SW_CONDITIONS)
            self._session = chip.session
        return out + _sw(sw)

    def _process_protected(self, apdu: bytes) -> bytes:
        keys = self._session
        if keys is None:
            return _sw(SW_SM_INCORRECT)
        try:
            _, ins, p1, p2, data, le = unprotect_command(keys, apdu)
        except (SecureMessagingError, ValueError):
            self._session = None
            return _sw(SW_SM_INCORRECT)
        out, sw = b"", SW_OK
        if ins == 0xA4 and p1 == 0x04:
            self._selected_app = data == EMRTD_AID
            sw = SW_OK if self._selected_app else SW_NOT_FOUND
        elif ins == 0xA4 and p1 == 0x02:
            fid = int.from_bytes(data, "big") if len(data) == 2 else -1
            if fid in self.files:
                self._current = fid
            else:
                sw = SW_NOT_FOUND
        elif ins == 0xB0:
            if p1 & 0x80:
                fid = SFI_TO_FID.get(p1 & 0x1F)
                if fid not in self.files:
                    return protect_response(keys, b"", SW_NOT_FOUND)
                self._current, offset = fid, p2
            else:
                offset = (p1 << 8) | p2
            if self._current is None:
                sw = SW_CONDITIONS
            elif le is None or le > self.max_read:
                sw = SW_WRONG_LENGTH
            else:
                content = self.files[self._current]
                if offset > len(content):
                    sw = SW_WRONG_P1P2
                else:
                    out = content[offset:offset + le]
        else:
            sw = SW_INS
        return protect_response(keys, out, sw)
