"""Everything that can go wrong between the reader and the chip, as codes the pages put in words.

Every failure of the card path ends as one ``CardError`` subclass with a stable ``code`` (and, where the
words need them, plain ``params``). The words a citizen can act on, in Vietnamese and English, live in
kiosk/messages_devices.toml under ``card_error_<code>``; ``str()`` of an error is a technical line for
logs. Neither holds personal data.
"""


class CardError(Exception):
    """A card read that did not work; ``code`` says which way (the words are ``card_error_<code>``)."""

    code = "unreadable"

    def __init__(self, detail: str | None = None, *, code: str | None = None, **params):
        if code is not None:
            self.code = code
        # Plain values the words need (a data group number); never personal data.
        self.params = params
        # `detail` is technical (status words, which step) and never holds personal data.
        self.detail = detail
        super().__init__(self.code + (f" ({detail})" if detail else ""))


class ReaderServiceError(CardError):
    """The PC/SC service (pcscd) is not running; ``detail`` says so for staff, the citizen sees no jargon."""

    code = "reader_service"


class NoReaderError(CardError):
    code = "no_reader"


class NoCardError(CardError):
    code = "no_card"


class CardRemovedError(CardError):
    code = "card_removed"


class NotAnIdCardError(CardError):
    code = "not_an_id_card"


class CardNotAnsweringError(CardError):
    """An APDU or the whole read ran past its deadline: the chip (or the reader) went silent."""

    code = "not_answering"


class AccessDeniedError(CardError):
    """PACE or BAC failed: what was typed (number, birth date, expiry date) does not open this chip.
    Each such try counts on the chip towards blocking it; ``protocol`` says which one failed."""

    code = "access_denied"
    protocol = ""


class DatesNeededError(CardError):
    """The number alone did not open the chip (no PACE, or PACE refused it): BAC needs the birth and expiry
    dates. Not a failure to show: the kiosk asks for the dates. ``pace_refused`` says whether PACE was tried
    and refused, so the next read goes straight to BAC and never repeats it."""

    code = "dates_needed"
    pace_refused = False


class TooManyTriesError(CardError):
    """Wrong keys twice for one card: stop before the chip blocks itself."""

    code = "too_many_tries"


class CardBlockedError(CardError):
    """The chip answered 69 83: it has blocked authentication after wrong keys."""

    code = "blocked"


class CardCommunicationError(CardError):
    """Garbage, truncated or unprotected answers, or secure messaging that keeps failing."""

    code = "communication"


class CardDataError(CardError, ValueError):
    """A file, MRZ or QR text that does not parse. Also a ValueError, so callers may treat it as bad input.
    What was typed to open the chip raises it with one of DATA_CODES instead of the general code."""

    code = "bad_data"


# CardDataError codes for what was typed (kiosk card read, CardKey.from_strings), beside the classes' codes.
DATA_CODES = ("id_number_digits", "bad_birth_date", "bad_expiry_date")


class QrFormatError(CardDataError):
    code = "qr_format"


class CardTamperedError(CardError):
    """Passive Authentication found a file whose hash or signature does not match: the data is refused.
    ``reason`` (one of TAMPERED_REASONS, or "") says what did not match: its words,
    ``card_error_tampered_<reason>``, come before those of the code; ``params`` may hold ``dg``, the number
    of the data group."""

    code = "tampered"

    def __init__(self, detail: str | None = None, *, reason: str = "", **params):
        self.reason = reason
        super().__init__(detail, **params)


TAMPERED_REASONS = ("unsupported_hash", "sod_damaged", "dg_not_signed", "dg_changed", "signer_count",
                    "signer_cert_damaged", "signer_cert_missing", "signature_invalid")


def all_codes() -> set[str]:
    """Every code a CardError may carry (for the messages' completeness test)."""
    found, todo = set(DATA_CODES), [CardError]
    while todo:
        cls = todo.pop()
        found.add(cls.code)
        todo.extend(cls.__subclasses__())
    return found
