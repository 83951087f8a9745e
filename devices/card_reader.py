"""Read a CCCD chip over PC/SC: wait for the card, open it (PACE with the last 6 digits of the number
first, BAC with the dates where PACE is missing or refused), read EF.COM, DG1, DG13 and EF.SOD (DG2, the
photo, only when asked) under secure messaging, check them with Passive Authentication, and return the
fields the procedure wizard prefills.

    key = CardKey("001090012345")                      # PACE needs the number only
    result = read_cccd(key, csca_dir="/etc/dvc-kiosk/csca")
    result.fields["full_name"], result.verification, result.verification_reason, result.findings
    # DatesNeededError: ask the dates, then read_cccd(CardKey(number, birth, expiry), access="bac")

Deadlines: every PC/SC call (connect, each APDU) has APDU_TIMEOUT_S and the whole read READ_TIMEOUT_S.
A chip or reader that goes silent raises CardNotAnsweringError by then; the call that hangs is left to
a daemon thread (pcscd answers it when the card leaves the reader) and its connection is released there.

Privacy: file contents, keys and the photo stay in memory; nothing here writes them to disk or logs, and
the reprs of CardKey and CardResult hide them.
"""
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from devices import bac, cccd, pace
from devices.card_errors import (AccessDeniedError, CardBlockedError, CardCommunicationError, CardDataError,
                                 CardError, CardNotAnsweringError, CardRemovedError, CardTamperedError,
                                 DatesNeededError, NoCardError, NoReaderError, NotAnIdCardError, QrFormatError,
                                 ReaderServiceError, TooManyTriesError)
from devices.cccd import parse_front_qr
from devices.mrz import bac_document_number, mrz_key_string
from devices.passive_auth import card_notes, passive_authentication
from devices.secure_messaging import SecureMessagingError, protect_command, unprotect_response

__all__ = ["CardKey", "CardResult", "read_cccd", "parse_front_qr", "CardError", "AccessDeniedError",
           "CardBlockedError", "CardCommunicationError", "CardDataError", "CardNotAnsweringError",
           "CardRemovedError", "CardTamperedError", "DatesNeededError", "NoCardError", "NoReaderError",
           "NotAnIdCardError", "QrFormatError", "ReaderServiceError", "TooManyTriesError", "CardReading",
           "read_with", "list_readers", "reader_status", "APDU_TIMEOUT_S", "READ_TIMEOUT_S", "MAX_WRONG_KEYS"]

log = logging.getLogger(__name__)

EMRTD_AID = bytes.fromhex("A0000002471001")
# READ BINARY sizes to try, largest first: 0xDF keeps a 3DES-protected answer inside a short APDU.
BLOCK_SIZES = (0xDF, 0x80, 0x40, 0x20)
MAX_LOGINS = 3
APDU_TIMEOUT_S = 3.0  # one command to the chip (a contactless chip answers in tens of milliseconds)
READ_TIMEOUT_S = 15.0  # the whole read, from the connection to the last file
REMOVAL_SEEN_S = 0.6  # how long pcscd may take to notice that a card left
MAX_WRONG_KEYS = 2  # wrong-key tries (PACE or BAC) for one card presentation before asking for staff
PREFILL_NAMES = ("id_number", "full_name", "birth_date", "sex", "nationality", "ethnicity", "religion",
                 "place_of_origin", "residence", "identifying_marks", "issue_date", "expiry_date",
                 "father_name", "mother_name", "spouse_name", "old_id_number")


@dataclass(frozen=True)
class CardKey:
    """What opens the chip: the 12-digit CCCD number (PACE uses its last 6 digits), and for BAC the birth
    date and the expiry date, or ``no_expiry`` for a card marked "Không thời hạn"."""

    number: str = field(repr=False)
    birth_date: date | None = field(default=None, repr=False)
    expiry_date: date | None = field(default=None, repr=False)
    no_expiry: bool = False

    @property
    def has_dates(self) -> bool:
        """Whether BAC can be tried with this key."""
        return self.birth_date is not None and (self.expiry_date is not None or self.no_expiry)

    def mrz_info(self) -> str:
        if not self.has_dates:
            raise DatesNeededError("BAC without dates")
        return mrz_key_string(bac_document_number(self.number), self.birth_date,
                              None if self.no_expiry else self.expiry_date)

    @classmethod
    def from_strings(cls, number: str, birth: str | None = None, expiry: str | None = None) -> "CardKey":
        """From ISO dates (yyyy-mm-dd) or dd/mm/yyyy; expiry "none" (or "Không thời hạn") for a card that
        does not expire. Dates may be left out (PACE only). Raises CardDataError with the code
        ``id_number_digits``, ``bad_birth_date`` or ``bad_expiry_date``."""
        def parse(text: str, which: str) -> date:
            iso = cccd.vn_date_to_iso(text) if "/" in text or len(text) == 8 else text
            try:
                return date.fromisoformat(iso or "")
            except ValueError:
                raise CardDataError(f"{which} is not a date", code=f"bad_{which}") from None
        bac_document_number(number)  # validates the number
        no_expiry = bool(expiry) and (expiry.strip().lower() == "none" or cccd.says_no_expiry(expiry))
        return cls(number.strip(), parse(birth, "birth_date") if birth else None,
                   parse(expiry, "expiry_date") if expiry and not no_expiry else None,
                   no_expiry)

    @classmethod
    def from_front_qr(cls, text: str, expiry: str | None = None) -> "CardKey":
        """From the QR printed on the card: the number and the birth date. The QR has no expiry date:
        PACE needs none; for BAC give the one printed on the card (or "none")."""
        qr = parse_front_qr(text)
        return cls.from_strings(qr["number"], qr["birth_date"], expiry)


@dataclass
class CardResult:
    """What the chip said. ``fields`` uses the catalog's prefill names without "card."; dates are ISO."""

    fields: dict = field(repr=False)
    verified: bool  # True for "verified" and "verified_warning"
    verification: str = ""  # "verified", "verified_warning" or "not_verified" (tampered data raises)
    verification_reason: str = ""  # why: one of passive_auth.REASONS
    findings: tuple = ()  # passive_auth.Finding: warnings and notes, in order (the words are the page's)
    unreadable: list = field(default_factory=list)  # catalog names of fields the chip had but we could not read
    mrz: dict = field(default_factory=dict, repr=False)
    data_groups: list = field(default_factory=list)
    checked_data_groups: list = field(default_factory=list)
    photo: bytes | None = field(default=None, repr=False)
    reader_name: str = ""
    apdu_count: int = 0
    logins: int = 0
    access_protocol: str = ""  # "PACE" or "BAC"

    def to_dict(self) -> dict:
        """JSON-ready, without the photo."""
        return {"fields": dict(self.fields), "verified": self.verified, "verification": self.verification,
                "unreadable": list(self.unreadable), "verification_reason": self.verification_reason,
                "findings": [finding.to_dict() for finding in self.findings],
                "data_groups": self.data_groups, "checked_data_groups": self.checked_data_groups,
                "reader_name": self.reader_name, "apdu_count": self.apdu_count,
                "access_protocol": self.access_protocol}


# --- PC/SC -------------------------------------------------------------------------------------------

def _pcsc_readers():
    from smartcard.System import readers
    try:
        return readers()
    except Exception as exc:  # EstablishContextException / ListReadersException when no daemon
        raise ReaderServiceError(f"{type(exc).__name__}") from None


def list_readers() -> list[str]:
    return [str(r) for r in _pcsc_readers()]


def _within(seconds: float, call, *args):
    """call(*args) in a daemon thread; its result, or CardNotAnsweringError after ``seconds``.

    pcscd has no cancel for a command already sent to a card, and a silent chip holds the reader until it
    leaves: the waiting is done here, and the hung call is left behind to finish when pcscd lets it go."""
    box: dict = {}
    done = threading.Event()

    def run():
        try:
            box["value"] = call(*args)
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc
        finally:
            done.set()
            after = box.get("after")
            if after is not None:  # the caller gave up on this call: clean up behind it
                after()

    thread = threading.Thread(target=run, name="pcsc-call", daemon=True)
    box["thread"] = thread
    thread.start()
    if not done.wait(max(0.0, seconds)):
        err = CardNotAnsweringError(f"no answer within {seconds:.1f} s")
        err.hung = box
        raise err
    if "error" in box:
        raise box["error"]
    return box["value"]


def _release_after(hung: dict, connection) -> None:
    """Release ``connection`` once the call left behind in ``hung`` returns (now, if it already has):
    releasing it while that call hangs would block in pcscd until the card leaves."""
    hung["after"] = lambda: _release(connection)
    if not hung["thread"].is_alive():
        _release(connection)


class PcscTransport:
    """One card connection; ``transmit`` returns response data + status word as bytes, within
    APDU_TIMEOUT_S and before ``deadline`` (a time.monotonic() value, set for the whole read)."""

    def __init__(self, connection, reader_name: str, apdu_timeout_s: float = APDU_TIMEOUT_S):
        self.connection = connection
        self.reader_name = reader_name
        self.apdu_count = 0
        self.apdu_timeout_s = apdu_timeout_s
        self.deadline: float | None = None
        self._hung: dict | None = None  # the call left behind, if one hung

    def transmit(self, apdu: bytes) -> bytes:
        if self._hung is not None:
            raise CardNotAnsweringError("the reader is still busy with an earlier command")
        self.apdu_count += 1
        timeout = self.apdu_timeout_s
        if self.deadline is not None:
            timeout = min(timeout, self.deadline - time.monotonic())
            if timeout <= 0:
                raise CardNotAnsweringError("the read ran past its deadline")
        try:
            data, sw1, sw2 = _within(timeout, self.connection.transmit, list(apdu))
        except CardNotAnsweringError as exc:
            self._hung = exc.hung
            raise
        except Exception as exc:  # CardConnectionException, or any other pyscard failure mid-read
            raise self._broken(type(exc).__name__) from None
        return bytes(data) + bytes([sw1, sw2])

    def _broken(self, detail: str) -> CardError:
        """A transmit that failed: the card left, or it is there and gave a broken answer."""
        # pyscard says the same for both. pcscd notices a card gone at its next poll of the reader (every
        # 0.4 s), so ask it a little longer than that before calling the answer broken.
        until = time.monotonic() + REMOVAL_SEEN_S
        while True:
            try:
                _within(min(1.0, self.apdu_timeout_s), self.connection.getATR)
            except Exception:
                return CardRemovedError(detail)
            if time.monotonic() >= until:
                return CardCommunicationError(f"broken answer ({detail})")
            time.sleep(0.1)

    def close(self) -> None:
        if self._hung is not None:
            _release_after(self._hung, self.connection)
        else:
            _release(self.connection)


def reader_status(reader_name: str | None = None) -> dict:
    """For a device status page: {"ok", "readers", "card_present", "code"}, ``code`` being "ready" or the
    code of the CardError that says what is wrong. Never raises; touches no card data (it only asks
    whether a card is there)."""
    from smartcard.Exceptions import CardConnectionException, NoCardException
    try:
        readers = _pcsc_readers()
    except CardError as err:
        return {"ok": False, "readers": [], "card_present": False, "code": err.code}
    if reader_name:
        readers = [r for r in readers if str(r) == reader_name or str(r).startswith(reader_name)]
    if not readers:
        return {"ok": False, "readers": [], "card_present": False, "code": NoReaderError.code}
    present = False
    for reader in readers:
        connection = reader.createConnection()
        try:
            _within(APDU_TIMEOUT_S, connection.connect)
            present = True
        except CardNotAnsweringError as err:
            _release_after(err.hung, connection)
            return {"ok": False, "readers": [str(r) for r in readers], "card_present": True, "code": err.code}
        except (NoCardException, CardConnectionException):
            pass
        except Exception:
            pass
        _release(connection)
        if present:
            break
    return {"ok": True, "readers": [str(r) for r in readers], "card_present": present, "code": "ready"}


def _release(connection) -> None:
    """Disconnect and free the PC/SC context now, not in a __del__ that may run after pcscd is gone."""
    for step in ("disconnect", "release"):
        try:
            getattr(connection, step)()
        except Exception:
            pass


def connect_card(reader_name: str | None = None, timeout_s: float = 10.0,
                 apdu_timeout_s: float = APDU_TIMEOUT_S) -> PcscTransport:
    """Wait up to timeout_s for a card on the named reader (or any reader) and connect to it. A reader held
    by a card that does not answer raises CardNotAnsweringError after apdu_timeout_s."""
    from smartcard.Exceptions import CardConnectionException, NoCardException
    deadline = time.monotonic() + timeout_s
    saw_reader = False
    while True:
        readers = _pcsc_readers()
        if reader_name:
            readers = [r for r in readers if str(r) == reader_name or str(r).startswith(reader_name)]
        saw_reader = saw_reader or bool(readers)
        for reader in readers:
            connection = reader.createConnection()
            try:
                _within(apdu_timeout_s, connection.connect)
            except CardNotAnsweringError as err:
                # A card that hangs holds the reader: nothing can be read until it is taken off.
                _release_after(err.hung, connection)
                raise CardNotAnsweringError("the reader is held by a card that does not answer") from None
            except (NoCardException, CardConnectionException):
                _release(connection)
                continue
            except Exception:
                _release(connection)
                continue
            return PcscTransport(connection, str(reader), apdu_timeout_s)
        if time.monotonic() >= deadline:
            if not saw_reader:
                raise NoReaderError(reader_name or "no PC/SC reader")
            raise NoCardError(f"no card within {timeout_s} s")
        time.sleep(0.05)


# --- the eMRTD application --------------------------------------------------------------------------

def _sw(response: bytes) -> int:
    if len(response) < 2:
        raise CardCommunicationError("response shorter than a status word")
    return int.from_bytes(response[-2:], "big")


class CardReading:
    """One reading of one chip: PACE or BAC, then files under secure messaging, logging in again when the
    session breaks (up to MAX_LOGINS times in all).

    Each wrong-key try counts on the chip towards blocking it, so a way in that was refused is never
    tried again on this reading (``refused``), and ``wrong_keys`` counts the refusals."""

    def __init__(self, transport, key: CardKey, access: str = "auto", wrong_keys: int = 0):
        if access not in ("auto", "pace", "bac"):
            raise ValueError("access is one of 'auto', 'pace', 'bac'")
        self.transport = transport
        self.key = key
        self.access = access
        self.session: bac.SessionKeys | None = None
        self.protocol: str | None = None
        self.pace_infos: list | None = None  # from EF.CardAccess, read once
        self.logins = 0
        self.block_size_index = 0
        self.refused: set[str] = set()
        self.wrong_keys = wrong_keys  # wrong-key tries already made on this card presentation

    def _may_try(self) -> None:
        if self.wrong_keys >= MAX_WRONG_KEYS:
            raise TooManyTriesError(f"{self.wrong_keys} wrong-key tries")

    def _refusal(self, protocol: str, detail: str, err: CardError) -> CardError:
        """Count a wrong-key try; the error to raise (TooManyTriesError once the budget is spent)."""
        self.refused.add(protocol)
        self.wrong_keys += 1
        if self.wrong_keys >= MAX_WRONG_KEYS and not isinstance(err, DatesNeededError):
            err = TooManyTriesError(detail)
        err.protocol = protocol
        err.pace_refused = "PACE" in self.refused
        return err

    def login(self) -> None:
        """PACE with the CAN when the chip offers it (and access allows); BAC with the dates where it does
        not, or refused the CAN. Once a way in worked, logging in again uses the same one."""
        self.session = None
        self.logins += 1
        if self.protocol == "BAC":
            self._login_bac()
            return
        if self.access != "bac" and "PACE" not in self.refused:
            self._may_try()
            try:
                if self._login_pace():
                    self.protocol = "PACE"
                    return
                if self.access == "pace":
                    raise NotAnIdCardError("the chip does not offer PACE")
            except pace.PaceRefused as exc:
                wanted = AccessDeniedError if self.access == "pace" or self.key.has_dates else DatesNeededError
                err = self._refusal("PACE", exc.detail, wanted(exc.detail))
                if self.access == "pace" or not self.key.has_dates or isinstance(err, TooManyTriesError):
                    raise err from None
            except CardCommunicationError:
                if self.access == "pace":
                    raise
            self.session = None
        if not self.key.has_dates:
            raise DatesNeededError("the chip has no PACE; BAC needs the dates")
        self._may_try()
        self._login_bac()
        self.protocol = "BAC"

    def _plain(self, apdu: bytes) -> tuple[bytes, int]:
        response = self.transport.transmit(apdu)
        return response[:-2], _sw(response)

    def _login_pace(self) -> bool:
        """Run PACE with the CAN (last 6 digits) if EF.CardAccess offers a variant we speak."""
        if self.pace_infos is None:
            self.pace_infos = self._read_card_access()
        if not self.pace_infos:
            return False
        if self.logins > 1:
            # Logging in again: go back to the MF, where PACE starts (the answer does not matter).
            self._plain(b"\x00\xA4\x00\x0C\x02\x3F\x00")
        can = self.key.number[-6:].encode("ascii")
        self.session = pace.run_pace(self._plain, self.pace_infos[0], can, pace.PASSWORD_CAN)
        _, sw = self._protected(0xA4, 0x04, 0x0C, EMRTD_AID)
        if sw != 0x9000:
            raise CardCommunicationError(f"SELECT eMRTD application after PACE: {sw:04X}")
        return True

    def _read_card_access(self) -> list:
        """EF.CardAccess (plain, by short file id) -> the PACE variants we support; [] for BAC-only chips."""
        card_access, le = b"", BLOCK_SIZES[self.block_size_index]
        while True:
            data, sw = self._plain(bytes([0x00, 0xB0, 0x9C, len(card_access), le]))
            if sw in (0x6700,) or (sw & 0xFF00) == 0x6C00:
                le = sw & 0xFF if (sw & 0xFF00) == 0x6C00 and sw & 0xFF else le // 2
                if le < 0x10:
                    return []
                continue
            if sw not in (0x9000, 0x6282):
                return []  # no EF.CardAccess: a BAC-only chip
            card_access += data
            total = card_tlv_length(card_access)
            if total is None or len(card_access) >= total or not data or len(card_access) > 0xFF:
                break
        try:
            return pace.parse_card_access(card_access)
        except CardDataError:
            return []

    def _login_bac(self) -> None:
        sw = _sw(self.transport.transmit(b"\x00\xA4\x04\x0C" + bytes([len(EMRTD_AID)]) + EMRTD_AID))
        if sw in (0x6A82, 0x6A86, 0x6D00, 0x6E00, 0x6999):
            raise NotAnIdCardError(f"SELECT eMRTD application: {sw:04X}")
        if sw != 0x9000:
            raise CardCommunicationError(f"SELECT eMRTD application: {sw:04X}")
        response = self.transport.transmit(b"\x00\x84\x00\x00\x08")
        sw = _sw(response)
        if sw == 0x6983:
            raise CardBlockedError("GET CHALLENGE: 6983")
        if sw != 0x9000 or len(response) != 10:
            raise CardCommunicationError(f"GET CHALLENGE: {sw:04X}, {len(response)} bytes")
        rnd_ic = response[:8]
        rnd_ifd, k_ifd = os.urandom(8), os.urandom(16)
        keys = bac.BacKeys.from_mrz_info(self.key.mrz_info())
        command = b"\x00\x82\x00\x00\x28" + bac.ifd_authenticate_data(keys, rnd_ic, rnd_ifd, k_ifd) + b"\x28"
        response = self.transport.transmit(command)
        sw = _sw(response)
        if sw == 0x6983:
            raise CardBlockedError("EXTERNAL AUTHENTICATE: 6983")
        if sw in (0x6300, 0x6982) or (sw & 0xFFF0) == 0x63C0:
            detail = f"EXTERNAL AUTHENTICATE: {sw:04X}"
            raise self._refusal("BAC", detail, AccessDeniedError(detail))
        if sw != 0x9000:
            raise CardCommunicationError(f"EXTERNAL AUTHENTICATE: {sw:04X}")
        self.session = bac.ifd_finish(keys, response[:-2], rnd_ic, rnd_ifd, k_ifd)

    def _protected(self, ins: int, p1: int, p2: int, data: bytes = b"", le: int | None = None) -> tuple[bytes, int]:
        if self.session is None:
            raise SecureMessagingError("no session")
        apdu = protect_command(self.session, 0x00, ins, p1, p2, data, le)
        try:
            return unprotect_response(self.session, self.transport.transmit(apdu))
        except SecureMessagingError:
            self.session = None
            raise

    def _select(self, fid: int) -> bool:
        _, sw = self._protected(0xA4, 0x02, 0x0C, fid.to_bytes(2, "big"))
        if sw == 0x9000:
            return True
        if sw in (0x6A82, 0x6A88):
            return False
        if sw == 0x6982:
            raise AccessDeniedError(f"SELECT {fid:04X}: {sw:04X}")
        raise CardCommunicationError(f"SELECT {fid:04X}: {sw:04X}")

    def _read_binary(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at offset, falling back to smaller blocks when the chip wants them."""
        while True:
            le = min(length, BLOCK_SIZES[self.block_size_index])
            data, sw = self._protected(0xB0, (offset >> 8) & 0x7F, offset & 0xFF, le=le)
            if sw in (0x9000, 0x6282) and (data or le == 0):
                return data
            if sw == 0x6700 or (sw & 0xFF00) == 0x6C00:
                if self.block_size_index + 1 >= len(BLOCK_SIZES):
                    raise CardCommunicationError(f"READ BINARY: {sw:04X} even with small blocks")
                self.block_size_index += 1
                continue
            raise CardCommunicationError(f"READ BINARY at {offset}: {sw:04X}, {len(data)} bytes")

    def read_file(self, fid: int, partial: bytearray) -> bytes | None:
        """Read a whole file into ``partial`` (kept across logins, so a retry resumes); None if absent."""
        if not self._select(fid):
            return None
        if len(partial) < 4:
            partial[:] = self._read_binary(0, 4)
        total = _file_length(partial)
        if total > 0x8000:
            raise CardCommunicationError(f"file {fid:04X} claims {total} bytes")
        while len(partial) < total:
            chunk = self._read_binary(len(partial), total - len(partial))
            partial.extend(chunk)
        return bytes(partial[:total])

    def read_files(self, fids: list[int]) -> dict[int, bytes | None]:
        """Read the files in order; on a secure messaging failure log in again and resume."""
        out: dict[int, bytes | None] = {}
        partial: dict[int, bytearray] = {fid: bytearray() for fid in fids}
        if self.session is None:
            self.login()
        pending = list(fids)
        while pending:
            fid = pending[0]
            try:
                out[fid] = self.read_file(fid, partial[fid])
                pending.pop(0)
            except (SecureMessagingError, CardDataError, CardCommunicationError) as exc:
                # A broken or unprotected answer: the session is lost, so log in again and resume.
                if self.logins >= MAX_LOGINS:
                    raise CardCommunicationError(f"secure messaging kept failing: {exc.detail}") from None
                log.info("secure messaging broke (%s); logging in again", exc.detail)
                self.login()
        return out


def card_tlv_length(head: bytes) -> int | None:
    from devices import card_tlv
    try:
        return card_tlv.total_length(bytes(head[:6]))
    except CardDataError:
        return None


def _file_length(head: bytes | bytearray) -> int:
    from devices import card_tlv
    try:
        total = card_tlv.total_length(bytes(head[:4]))
    except CardDataError:
        total = None
    if total is None:
        raise CardCommunicationError("file header does not parse")
    return total


# --- the whole read ---------------------------------------------------------------------------------

def _fields_from(dg13: cccd.Dg13 | None, mrz: dict) -> dict:
    """The prefill fields: DG13's, and where the chip has no DG13 field for it, what the MRZ holds. The MRZ
    name is never used: it is in Latin capitals without diacritics, not how the citizen's name is written."""
    fields = {name: dg13.fields[name] for name in PREFILL_NAMES if dg13 is not None and dg13.fields.get(name)}
    unreadable = set(dg13.unreadable) if dg13 is not None else set()
    fallbacks = {"birth_date": mrz.get("birth_date")}
    if not (dg13 is not None and dg13.no_expiry):
        fallbacks["expiry_date"] = mrz.get("expiry_date")
    if mrz.get("optional_data_1", "").isdigit() and len(mrz.get("optional_data_1", "")) >= 12:
        fallbacks["id_number"] = mrz["optional_data_1"][:12]
    for name, value in fallbacks.items():
        if value and name not in fields and name not in unreadable:
            fields[name] = value
    return fields


def _photo_bytes(dg2: bytes) -> bytes | None:
    """The image inside DG2 (JPEG or JPEG 2000), or None."""
    for magic in (b"\xFF\xD8\xFF", b"\x00\x00\x00\x0CjP  ", b"\xFF\x4F\xFF\x51"):
        i = dg2.find(magic)
        if i >= 0:
            return dg2[i:]
    return None


def read_cccd(key: CardKey, *, reader_name: str | None = None, csca_dir: str | Path | None = None,
              want_photo: bool = False, timeout_s: float = 10.0, access: str = "auto", wrong_keys: int = 0,
              read_timeout_s: float = READ_TIMEOUT_S, apdu_timeout_s: float = APDU_TIMEOUT_S) -> CardResult:
    """Wait up to timeout_s for a CCCD, then read and verify it within read_timeout_s. Raises a CardError
    subclass on any failure; AccessDeniedError, DatesNeededError and TooManyTriesError carry
    ``wrong_keys`` (the tries spent on this card so far: pass it to the next read of the same card).

    access: "auto" (PACE when the chip offers it, else or on refusal BAC when the key has the dates),
    "pace" or "bac"."""
    transport = connect_card(reader_name, timeout_s, apdu_timeout_s)
    transport.deadline = time.monotonic() + read_timeout_s
    try:
        return read_with(transport, key, csca_dir=csca_dir, want_photo=want_photo, access=access,
                         wrong_keys=wrong_keys)
    finally:
        transport.close()


def read_with(transport, key: CardKey, *, csca_dir=None, want_photo: bool = False,
              access: str = "auto", wrong_keys: int = 0) -> CardResult:
    """The read over an already connected transport (anything with ``transmit(bytes) -> bytes``)."""
    reading = CardReading(transport, key, access, wrong_keys)
    fids = [cccd.EF_COM, cccd.EF_DG1, cccd.EF_DG13, cccd.EF_SOD] + ([cccd.EF_DG2] if want_photo else [])
    try:
        files = reading.read_files(fids)
    except CardError as err:
        err.wrong_keys = reading.wrong_keys
        raise
    data_groups = []
    if files.get(cccd.EF_COM):
        try:
            data_groups = cccd.parse_com(files[cccd.EF_COM])["data_groups"]
        except CardDataError:
            data_groups = []  # EF.COM is unsigned and only informative
    dg1, dg13_bytes, sod = files.get(cccd.EF_DG1), files.get(cccd.EF_DG13), files.get(cccd.EF_SOD)
    if dg1 is None and dg13_bytes is None:
        raise NotAnIdCardError("neither DG1 nor DG13 on the chip")

    signed_files = {n: c for n, c in ((1, dg1), (13, dg13_bytes), (2, files.get(cccd.EF_DG2))) if c is not None}
    # Hashes first: a changed file is refused before anything from it is used.
    pa = passive_authentication(sod, signed_files, csca_dir)

    mrz = cccd.parse_dg1(dg1) if dg1 is not None else {}
    unreadable: list[str] = []
    dg13 = None
    if dg13_bytes is not None:
        try:
            dg13 = cccd.parse_dg13(dg13_bytes)
            unreadable = list(dg13.unreadable)
        except CardDataError:
            # Nothing of an unreadable DG13 is used, and nothing is guessed from it.
            unreadable = ["dg13"]
    fields = _fields_from(dg13, mrz)
    if dg13 is not None and dg13.no_expiry:
        fields["no_expiry"] = True
    pa = card_notes(pa, unreadable, fields.get("expiry_date"))
    photo = _photo_bytes(files[cccd.EF_DG2]) if want_photo and files.get(cccd.EF_DG2) else None
    result = CardResult(fields=fields, verified=pa.verified, verification=pa.status,
                        verification_reason=pa.reason, findings=pa.findings,
                        unreadable=unreadable, mrz=mrz, data_groups=data_groups,
                        checked_data_groups=pa.checked_data_groups, photo=photo,
                        reader_name=getattr(transport, "reader_name", ""),
                        apdu_count=getattr(transport, "apdu_count", 0), logins=reading.logins,
                        access_protocol=reading.protocol or "")
    log.info("card read: %s, %d APDUs, %d login(s), %s, %d unreadable", result.access_protocol,
             result.apdu_count, reading.logins, pa.status, len(unreadable))
    return result
