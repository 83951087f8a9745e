"""Everything that can go wrong between the reader and the chip, in words a citizen can act on.

Every failure of the card path ends as one ``CardError`` subclass carrying a Vietnamese message (shown on
the kiosk) and an English one (for staff and logs). The messages never contain personal data.
"""


class CardError(Exception):
    """A card read that did not work; ``message_vi`` and ``message_en`` say what to do."""

    message_vi = "Không đọc được thẻ. Vui lòng thử lại."
    message_en = "The card could not be read. Please try again."

    def __init__(self, detail: str | None = None, *, message_vi: str | None = None,
                 message_en: str | None = None):
        if message_vi is not None:
            self.message_vi = message_vi
        if message_en is not None:
            self.message_en = message_en
        # `detail` is technical (status words, which step) and never holds personal data.
        self.detail = detail
        super().__init__(self.message_en + (f" ({detail})" if detail else ""))


class ReaderServiceError(CardError):
    """The PC/SC service (pcscd) is not running; ``detail`` says so for staff, the citizen sees no jargon."""

    message_vi = "Đầu đọc thẻ đang gặp sự cố. Vui lòng báo nhân viên hỗ trợ."
    message_en = "The card reader is not working. Please call staff."


class NoReaderError(CardError):
    message_vi = "Không tìm thấy đầu đọc thẻ. Vui lòng báo nhân viên hỗ trợ."
    message_en = "No card reader was found. Please call staff."


class NoCardError(CardError):
    message_vi = "Chưa có thẻ trên đầu đọc. Vui lòng đặt thẻ căn cước lên đầu đọc."
    message_en = "No card on the reader. Please place the ID card on the reader."


class CardRemovedError(CardError):
    message_vi = "Thẻ đã bị nhấc ra trong khi đọc. Vui lòng đặt lại thẻ và giữ yên cho đến khi đọc xong."
    message_en = "The card was removed while it was being read. Place it again and keep it still until done."


class NotAnIdCardError(CardError):
    message_vi = "Thẻ này không phải thẻ căn cước gắn chip."
    message_en = "This card is not a chip ID card."


class CardNotAnsweringError(CardError):
    """An APDU or the whole read ran past its deadline: the chip (or the reader) went silent."""

    message_vi = "Thẻ không trả lời. Vui lòng nhấc thẻ ra, chờ một chút rồi đặt lại lên đầu đọc."
    message_en = "The card does not answer. Take it off the reader, wait a moment and place it again."


class AccessDeniedError(CardError):
    """PACE or BAC failed: what was typed (number, birth date, expiry date) does not open this chip.
    Each such try counts on the chip towards blocking it; ``protocol`` says which one failed."""

    message_vi = ("Các số vừa nhập không mở được chip: số căn cước, ngày sinh hoặc ngày hết hạn không khớp "
                  "với thẻ. Vui lòng kiểm tra lại.")
    message_en = "The numbers you gave do not open the chip: the ID number, birth date or expiry date does not match the card."
    protocol = ""


class DatesNeededError(CardError):
    """The number alone did not open the chip (no PACE, or PACE refused it): BAC needs the birth and expiry
    dates. Not a failure to show: the kiosk asks for the dates. ``pace_refused`` says whether PACE was tried
    and refused, so the next read goes straight to BAC and never repeats it."""

    message_vi = "Cần thêm ngày sinh và ngày hết hạn của thẻ để mở chip."
    message_en = "The birth date and the card's expiry date are needed to open the chip."
    pace_refused = False


class TooManyTriesError(CardError):
    """Wrong keys twice for one card: stop before the chip blocks itself."""

    message_vi = ("Đã thử 2 lần mà chưa mở được chip. Để thẻ không bị khóa, vui lòng không thử thêm "
                  "và nhờ nhân viên hỗ trợ, hoặc nhập thông tin bằng tay.")
    message_en = ("Two tries did not open the chip. So that the card does not get blocked, please stop "
                  "trying and ask staff for help, or type the details in.")


class CardBlockedError(CardError):
    """The chip answered 69 83: it has blocked authentication after wrong keys."""

    message_vi = ("Chip trên thẻ đã tạm khóa việc đọc vì bị thử sai nhiều lần. Vui lòng không thử lại; "
                  "nhờ nhân viên hỗ trợ hoặc nhập thông tin bằng tay.")
    message_en = ("The card's chip has blocked reading for now after wrong tries. Please do not try again; "
                  "ask staff for help or type the details in.")


class CardCommunicationError(CardError):
    """Garbage, truncated or unprotected answers, or secure messaging that keeps failing."""

    message_vi = "Thẻ trả lời không hợp lệ. Vui lòng đặt lại thẻ và thử lại."
    message_en = "The card gave an invalid answer. Place the card again and retry."


class CardDataError(CardError, ValueError):
    """A file, MRZ or QR text that does not parse. Also a ValueError, so callers may treat it as bad input."""

    message_vi = "Dữ liệu trên thẻ không đúng định dạng."
    message_en = "The data on the card is not in the expected format."


class QrFormatError(CardDataError):
    message_vi = "Mã QR không phải mã QR của thẻ căn cước."
    message_en = "This QR code is not the QR code of an ID card."


class CardTamperedError(CardError):
    """Passive Authentication found a file whose hash or signature does not match: the data is refused."""

    message_vi = ("Dữ liệu trên chip không khớp với chữ ký số của cơ quan cấp thẻ, có thể đã bị sửa đổi. "
                  "Không sử dụng dữ liệu này; vui lòng nhập tay và báo nhân viên.")
    message_en = ("The chip data does not match the issuer's digital signature and may have been altered. "
                  "It is refused; please type the data in and call staff.")
