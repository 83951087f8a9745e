"""Read a CCCD chip over PC/SC: wait for the card, open it with BAC, read EF.COM, DG1, DG13 and EF.SOD
(DG2, the photo, only when asked) under secure messaging, check them with Passive Authentication, and
return the fields the procedure wizard prefills.

    key = CardKey("001090012345", date(1990, 5, 17), date(2030, 5, 17))
    result = read_cccd(key, csca_dir="/etc/dvc-kiosk/csca")
    result.fields["full_name"], result.verified, result.verification_message_vi

Privacy: file contents, keys and the photo stay in memory; nothing here writes them to disk or logs, and
the reprs of CardKey and CardResult hide them.
"""
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from devices import bac, cccd, pace
from devices.card_errors import (AccessDeniedError, CardCommunicationError, CardDataError, CardError,
                                 CardRemovedError, CardTamperedError, NoCardError, NoReaderError,
                                 NotAnIdCardError, QrFormatError, ReaderServiceError)
from devices.cccd import parse_front_qr
from devices.mrz import bac_document_number, mrz_key_string
from devices.passive_auth import PassiveAuthResult, passive_authentication
from devices.secure_messaging import SecureMessagingError, protect_command, unprotect_response

__all__ = ["CardKey", "CardResult", "read_cccd", "parse_front_qr", "CardError", "AccessDeniedError",
           "CardCommunicationError", "CardDataError", "CardRemovedError", "CardTamperedError", "NoCardError",
           "NoReaderError", "NotAnIdCardError", "QrFormatError", "ReaderServiceError", "CardReading", "read_with",
           "list_readers", "reader_status"]

log = logging.getLogger(__name__)

EMRTD_AID = bytes.fromhex("A0000002471001")
# READ BINARY sizes to try, largest first: 0xDF keeps a 3DES-protected answer inside a short APDU.
BLOCK_SIZES = (0xDF, 0x80, 0x40, 0x20)
MAX_LOGINS = 3
PREFILL_NAMES = ("id_number", "full_name", "birth_date", "sex", "nationality", "ethnicity", "religion",
                 "place_of_origin", "residence", "identifying_marks", "issue_date", "expiry_date",
                 "father_name", "mother_name", "spouse_name", "old_id_number")


@dataclass(frozen=True)
class CardKey:
    """What opens the chip (BAC): the 12-digit CCCD number, the birth date and the expiry date."""

    number: str = field(repr=False)
    birth_date: date = field(repr=False)
    expiry_date: date = field(repr=False)

    def mrz_info(self) -> str:
        return mrz_key_string(bac_document_number(self.number), self.birth_date, self.expiry_date)

    @classmethod
    def from_strings(cls, number: str, birth: str, expiry: str) -> "CardKey":
        """From ISO dates (yyyy-mm-dd) or dd/mm/yyyy; raises CardDataError with a clear message."""
        def parse(text: str, what_vi: str, what_en: str) -> date:
            iso = cccd.vn_date_to_iso(text) if "/" in text or len(text) == 8 else text
            try:
                return date.fromisoformat(iso or "")
            except ValueError:
                raise CardDataError(f"bad {what_en}", message_vi=f"{what_vi} không đúng định dạng ngày.",
                                    message_en=f"The {what_en} is not a valid date.") from None
        bac_document_number(number)  # validates the number
        return cls(number.strip(), parse(birth, "Ngày sinh", "birth date"),
                   parse(expiry, "Ngày hết hạn", "expiry date"))

    @classmethod
    def from_front_qr(cls, text: str, expiry: str | None = None) -> "CardKey":
        """From the QR printed on the card. The QR has no expiry date: give the one printed on the card,
        or the estimate from the renewal ages is used (PACE needs only the number; BAC needs the real
        expiry). Raises QrFormatError, or CardDataError when no expiry can be had."""
        qr = parse_front_qr(text)
        expiry = expiry or qr["expiry_date_estimated"]
        if not expiry:
            raise CardDataError("no expiry date", message_vi="Vui lòng nhập ngày hết hạn in trên thẻ.",
                                message_en="Please enter the expiry date printed on the card.")
        return cls.from_strings(qr["number"], qr["birth_date"], expiry)


@dataclass
class CardResult:
    """What the chip said. ``fields`` uses the catalog's prefill names without "card."; dates are ISO."""

    fields: dict = field(repr=False)
    verified: bool
    verification_message_vi: str
    verification_message_en: str
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
        return {"fields": dict(self.fields), "verified": self.verified,
                "verification_message_vi": self.verification_message_vi,
                "verification_message_en": self.verification_message_en,
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


class PcscTransport:
    """One card connection; ``transmit`` returns response data + status word as bytes."""

    def __init__(self, connection, reader_name: str):
        self.connection = connection
        self.reader_name = reader_name
        self.apdu_count = 0

    def transmit(self, apdu: bytes) -> bytes:
        from smartcard.Exceptions import CardConnectionException
        self.apdu_count += 1
        try:
            data, sw1, sw2 = self.connection.transmit(list(apdu))
        except CardConnectionException as exc:
            raise CardRemovedError(type(exc).__name__) from None
        except Exception as exc:  # any other pyscard failure mid-read: treat as the card going away
            raise CardRemovedError(type(exc).__name__) from None
        return bytes(data) + bytes([sw1, sw2])

    def close(self) -> None:
        _release(self.connection)


def reader_status(reader_name: str | None = None) -> dict:
    """For a device status page: {"ok", "readers", "card_present", "message_vi", "message_en"}.
    Never raises; touches no card data (it only asks whether a card is there)."""
    from smartcard.Exceptions import CardConnectionException, NoCardException
    try:
        readers = _pcsc_readers()
    except CardError as err:
        return {"ok": False, "readers": [], "card_present": False, "message_vi": err.message_vi,
                "message_en": err.message_en}
    if reader_name:
        readers = [r for r in readers if str(r) == reader_name or str(r).startswith(reader_name)]
    if not readers:
        return {"ok": False, "readers": [], "card_present": False, "message_vi": NoReaderError.message_vi,
                "message_en": NoReaderError.message_en}
    present = False
    for reader in readers:
        connection = reader.createConnection()
        try:
            connection.connect()
            present = True
        except (NoCardException, CardConnectionException):
            pass
        except Exception:
            pass
        finally:
            _release(connection)
        if present:
            break
    return {"ok": True, "readers": [str(r) for r in readers], "card_present": present,
            "message_vi": "Đầu đọc thẻ sẵn sàng." + (" Có thẻ trên đầu đọc." if present else ""),
            "message_en": "The card reader is ready." + (" A card is on the reader." if present else "")}


def _release(connection) -> None:
    """Disconnect and free the PC/SC context now, not in a __del__ that may run after pcscd is gone."""
    for step in ("disconnect", "release"):
        try:
            getattr(connection, step)()
        except Exception:
            pass


def connect_card(reader_name: str | None = None, timeout_s: float = 10.0) -> PcscTransport:
    """Wait up to timeout_s for a card on the named reader (or any reader) and connect to it."""
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
                connection.connect()
            except (NoCardException, CardConnectionException):
                _release(connection)
                continue
            except Exception:
                _release(connection)
                continue
            return PcscTransport(connection, str(reader))
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
    session breaks (up to MAX_LOGINS times in all)."""

    def __init__(self, transport, key: CardKey, access: str = "auto"):
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

    def login(self) -> None:
        """PACE when the chip offers it (and access allows), else BAC; a PACE that fails falls back to BAC
        under "auto" (the chip may expect another PACE password than the CAN)."""
        self.session = None
        self.logins += 1
        if self.access != "bac":
            try:
                if self._login_pace():
                    self.protocol = "PACE"
                    return
                if self.access == "pace":
                    raise NotAnIdCardError("the chip does not offer PACE")
            except pace.PaceRefused as exc:
                if self.access == "pace":
                    raise AccessDeniedError(exc.detail) from None
            except CardCommunicationError:
                if self.access == "pace":
                    raise
            self.session = None
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
        if sw != 0x9000 or len(response) != 10:
            raise CardCommunicationError(f"GET CHALLENGE: {sw:04X}, {len(response)} bytes")
        rnd_ic = response[:8]
        rnd_ifd, k_ifd = os.urandom(8), os.urandom(16)
        keys = bac.BacKeys.from_mrz_info(self.key.mrz_info())
        command = b"\x00\x82\x00\x00\x28" + bac.ifd_authenticate_data(keys, rnd_ic, rnd_ifd, k_ifd) + b"\x28"
        response = self.transport.transmit(command)
        sw = _sw(response)
        if sw in (0x6300, 0x6982) or (sw & 0xFFF0) == 0x63C0:
            raise AccessDeniedError(f"EXTERNAL AUTHENTICATE: {sw:04X}")
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
            except (SecureMessagingError, CardDataError) as exc:
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

def _fields_from(dg13: dict, mrz: dict) -> dict:
    fields = {name: dg13[name] for name in PREFILL_NAMES if dg13.get(name)}
    # A chip without DG13 (or with gaps) still gives what its MRZ has.
    fallbacks = {"birth_date": mrz.get("birth_date"), "expiry_date": mrz.get("expiry_date"),
                 "full_name": mrz.get("name")}
    if mrz.get("optional_data_1", "").isdigit() and len(mrz.get("optional_data_1", "")) >= 12:
        fallbacks["id_number"] = mrz["optional_data_1"][:12]
    for name, value in fallbacks.items():
        if value and name not in fields:
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
              want_photo: bool = False, timeout_s: float = 10.0, access: str = "auto") -> CardResult:
    """Wait for a CCCD, read and verify it. Raises a CardError subclass on any failure.

    access: "auto" (PACE when the chip offers it, else or on failure BAC), "pace" or "bac"."""
    transport = connect_card(reader_name, timeout_s)
    try:
        return read_with(transport, key, csca_dir=csca_dir, want_photo=want_photo, access=access)
    finally:
        transport.close()


def read_with(transport, key: CardKey, *, csca_dir=None, want_photo: bool = False,
              access: str = "auto") -> CardResult:
    """The read over an already connected transport (anything with ``transmit(bytes) -> bytes``)."""
    reading = CardReading(transport, key, access)
    fids = [cccd.EF_COM, cccd.EF_DG1, cccd.EF_DG13, cccd.EF_SOD] + ([cccd.EF_DG2] if want_photo else [])
    files = reading.read_files(fids)
    data_groups = []
    if files.get(cccd.EF_COM):
        try:
            data_groups = cccd.parse_com(files[cccd.EF_COM])["data_groups"]
        except CardDataError:
            data_groups = []  # EF.COM is unsigned and only informative
    dg1, dg13, sod = files.get(cccd.EF_DG1), files.get(cccd.EF_DG13), files.get(cccd.EF_SOD)
    if dg1 is None and dg13 is None:
        raise NotAnIdCardError("neither DG1 nor DG13 on the chip")

    signed_files = {n: c for n, c in ((1, dg1), (13, dg13), (2, files.get(cccd.EF_DG2))) if c is not None}
    if sod is None:
        pa = PassiveAuthResult(False, "Chưa xác thực: chip không có tệp chữ ký (EF.SOD).",
                               "Not verified: the chip has no signature file (EF.SOD).")
    else:
        # Hashes first: a changed file is refused before anything from it is used.
        pa = passive_authentication(sod, signed_files, csca_dir)

    mrz = cccd.parse_dg1(dg1) if dg1 is not None else {}
    dg13_fields = cccd.parse_dg13(dg13) if dg13 is not None else {}
    photo = _photo_bytes(files[cccd.EF_DG2]) if want_photo and files.get(cccd.EF_DG2) else None
    result = CardResult(fields=_fields_from(dg13_fields, mrz), verified=pa.verified,
                        verification_message_vi=pa.message_vi, verification_message_en=pa.message_en,
                        mrz=mrz, data_groups=data_groups, checked_data_groups=pa.checked_data_groups,
                        photo=photo, reader_name=getattr(transport, "reader_name", ""),
                        apdu_count=getattr(transport, "apdu_count", 0), logins=reading.logins,
                        access_protocol=reading.protocol or "")
    log.info("card read: %s, %d APDUs, %d login(s), verified=%s", result.access_protocol, result.apdu_count,
             reading.logins, pa.verified)
    return result
