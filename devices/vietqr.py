"""VietQR payment codes (NAPAS 247 transfers, EMVCo merchant-presented QR format).

A receipt for a procedure with a fee carries a VietQR the citizen can scan with any Vietnamese banking
app: the transfer arrives prefilled with the agency's account, the fee and the tracking code as its
content, so the agency can match the payment to the dossier.

The payload is a chain of EMVCo data objects, each ``ID (2 digits) + length (2 digits) + value``, and
ends with the CRC object ``63 04 XXXX``: CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF,
no reflection, no final XOR) over every character before XXXX, including the ``6304`` itself.
"""
import binascii
import re
import unicodedata
from dataclasses import dataclass
from typing import Mapping

# Fixed values from the NAPAS VietQR specification.
NAPAS_GUID = "A000000727"
SERVICE_TO_ACCOUNT = "QRIBFTTA"  # transfer to a bank account
SERVICE_TO_CARD = "QRIBFTTC"  # transfer to a card number
CURRENCY_VND = "704"  # ISO 4217
COUNTRY_VN = "VN"
STATIC = "11"  # point of initiation: the same QR for many payments (no amount)
DYNAMIC = "12"  # one QR for one payment (amount fixed)
MESSAGE_MAX = 25  # purpose of transaction (62/08): NAPAS allows 25 characters
ACCOUNT_MAX = 19


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE; ``binascii.crc_hqx`` is that CRC when started at 0xFFFF."""
    return binascii.crc_hqx(data, 0xFFFF)


def _tlv(tag: str, value: str) -> str:
    if len(value) > 99:
        raise ValueError(f"VietQR field {tag} is {len(value)} characters long; the format allows 99")
    return f"{tag}{len(value):02d}{value}"


def ascii_message(text: str, limit: int = MESSAGE_MAX) -> str:
    """Transfer content as banks accept it: Vietnamese folded to ASCII letters, digits and spaces.

    >>> ascii_message("Lệ phí hồ sơ K01-2611-0007")
    'Le phi ho so K0126110007'
    """
    text = unicodedata.normalize("NFC", text or "").replace("đ", "d").replace("Đ", "D")
    folded = "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))
    folded = re.sub(r"[^A-Za-z0-9 ]+", "", folded)
    return " ".join(folded.split())[:limit].rstrip()


def vietqr_payload(
    bank_bin: str,
    account: str,
    amount_vnd: int | None = None,
    message: str = "",
    *,
    service: str = SERVICE_TO_ACCOUNT,
) -> str:
    """The VietQR string for a transfer of ``amount_vnd`` to ``account`` at the bank ``bank_bin``.

    ``bank_bin`` is the bank's 6-digit NAPAS BIN (e.g. 970436 for Vietcombank). With no amount (or 0)
    the code is static and the payer types the amount; with an amount it is dynamic. ``message`` is
    folded to ASCII and cut to 25 characters (see :func:`ascii_message`).
    """
    bank_bin = str(bank_bin).strip()
    account = str(account).strip()
    if not re.fullmatch(r"\d{6}", bank_bin):
        raise ValueError("bank_bin must be the 6-digit NAPAS bank identification number")
    if not re.fullmatch(rf"[A-Za-z0-9]{{1,{ACCOUNT_MAX}}}", account):
        raise ValueError(f"account must be 1-{ACCOUNT_MAX} letters or digits")
    if service not in (SERVICE_TO_ACCOUNT, SERVICE_TO_CARD):
        raise ValueError(f"service must be {SERVICE_TO_ACCOUNT} or {SERVICE_TO_CARD}")
    if amount_vnd is not None and (isinstance(amount_vnd, bool) or not isinstance(amount_vnd, int) or amount_vnd < 0):
        raise ValueError("amount_vnd must be a whole, non-negative number of dong")

    beneficiary = _tlv("00", bank_bin) + _tlv("01", account)
    merchant = _tlv("00", NAPAS_GUID) + _tlv("01", beneficiary) + _tlv("02", service)
    parts = [
        _tlv("00", "01"),
        _tlv("01", DYNAMIC if amount_vnd else STATIC),
        _tlv("38", merchant),
        _tlv("53", CURRENCY_VND),
    ]
    if amount_vnd:
        parts.append(_tlv("54", str(amount_vnd)))
    parts.append(_tlv("58", COUNTRY_VN))
    purpose = ascii_message(message)
    if purpose:
        parts.append(_tlv("62", _tlv("08", purpose)))
    body = "".join(parts) + "6304"
    return body + f"{crc16_ccitt_false(body.encode('ascii')):04X}"


@dataclass(frozen=True)
class PaymentAccount:
    """Where fees are paid, from the station file's ``[payment]`` table."""

    bank_bin: str
    account: str
    account_name: str = ""
    bank_name: str = ""

    def payload(self, amount_vnd: int, message: str) -> str:
        return vietqr_payload(self.bank_bin, self.account, amount_vnd, message)


def payment_account(config: Mapping | None) -> PaymentAccount | None:
    """The station's payment account, or ``None`` when the station file has no usable ``[payment]``.

    Raises ``ValueError`` when ``[payment]`` is present but wrong, so a typo in a bank number is found
    at start-up rather than on a citizen's phone.
    """
    section = (config or {}).get("payment") or {}
    if not section.get("bank_bin") or not section.get("account"):
        return None
    account = PaymentAccount(
        bank_bin=str(section["bank_bin"]).strip(),
        account=str(section["account"]).strip(),
        account_name=str(section.get("account_name", "")).strip(),
        bank_name=str(section.get("bank_name", "")).strip(),
    )
    vietqr_payload(account.bank_bin, account.account, 1000, "check")  # raises on a bad bin or account
    return account
