"""Passive Authentication (ICAO 9303 part 11, section 5.1): EF.SOD is a CMS SignedData whose content, the
LDSSecurityObject, lists a hash for each data group. We check (1) the hash of every file read against
the SOD, (2) the Document Signer's signature over the SOD, and (3) that the Document Signer certificate
was issued by one of the CSCA certificates in the configured folder.

(1) or (2) failing means the data was altered: CardTamperedError, nothing is used. (3) failing (no
folder, no matching CSCA), or no EF.SOD at all, means the data is consistent but its origin unproven:
status "not_verified", in plain words, and the caller decides. A chain that holds but with a certificate
out of its validity (the Document Signer's or the CSCA's), or a card past its own expiry date, is
"verified_warning", with the reason. EF.COM is not covered by the SOD, by design of
ICAO 9303, and nothing is taken from it but the list of data groups.
"""
import hashlib
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from pathlib import Path

from asn1crypto import algos, cms, core
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from devices import card_tlv
from devices.card_errors import CardTamperedError

LDS_SECURITY_OBJECT_OID = "2.23.136.1.1.1"


class DataGroupHash(core.Sequence):
    _fields = [("data_group_number", core.Integer), ("data_group_hash_value", core.OctetString)]


class DataGroupHashValues(core.SequenceOf):
    _child_spec = DataGroupHash


class LdsVersionInfo(core.Sequence):
    _fields = [("lds_version", core.PrintableString), ("unicode_version", core.PrintableString)]


class LdsSecurityObject(core.Sequence):
    _fields = [
        ("version", core.Integer),
        ("hash_algorithm", algos.DigestAlgorithm),
        ("data_group_hash_values", DataGroupHashValues),
        ("lds_version_info", LdsVersionInfo, {"optional": True}),
    ]


_HASHES = {"sha1": hashes.SHA1, "sha224": hashes.SHA224, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
           "sha512": hashes.SHA512}


@dataclass
class PassiveAuthResult:
    status: str  # "verified", "verified_warning" or "not_verified"
    message_vi: str
    message_en: str
    checked_data_groups: list[int] = field(default_factory=list)
    signer: str | None = None  # the Document Signer's subject, for staff; holds no personal data

    @property
    def verified(self) -> bool:
        return self.status in ("verified", "verified_warning")

    def with_warning(self, vi: str, en: str) -> "PassiveAuthResult":
        """The same result, verified only with a warning, the reason added to the messages."""
        status = "verified_warning" if self.verified else self.status
        if self.status == "verified":
            return replace(self, status=status,
                           message_vi=f"Đã xác thực, có lưu ý: {vi}", message_en=f"Verified, with a warning: {en}")
        return replace(self, status=status, message_vi=f"{self.message_vi} {vi}", message_en=f"{self.message_en} {en}")

    def with_note(self, vi: str, en: str) -> "PassiveAuthResult":
        return replace(self, message_vi=f"{self.message_vi} {vi}", message_en=f"{self.message_en} {en}")


def _day(when) -> str:
    return when.strftime("%d/%m/%Y")


def _tampered(detail: str, what_vi: str, what_en: str) -> CardTamperedError:
    err = CardTamperedError(detail)
    err.message_vi = f"{what_vi} {CardTamperedError.message_vi}"
    err.message_en = f"{what_en} {CardTamperedError.message_en}"
    return err


# The hash algorithms ICAO 9303 part 10 allows for EF.SOD. Others (a SHAKE, say, whose digest needs a
# length, or anything hashlib happens to know) are refused like a tampered file.
ICAO_HASHES = ("sha1", "sha224", "sha256", "sha384", "sha512")


def _digest(name: str, data: bytes) -> bytes:
    if name not in ICAO_HASHES:
        raise _tampered(f"unsupported hash {name}", "Chip dùng thuật toán băm không được hỗ trợ.",
                        "The chip uses an unsupported hash algorithm.")
    return hashlib.new(name, data).digest()


def parse_sod(sod: bytes) -> tuple[cms.SignedData, LdsSecurityObject, bytes]:
    """EF.SOD (tag 77) -> (SignedData, LDSSecurityObject, its DER bytes). Raises CardTamperedError."""
    try:
        outer = card_tlv.parse_file(sod, 0x77)
        info = cms.ContentInfo.load(outer.value)
        if info["content_type"].native != "signed_data":
            raise ValueError("not SignedData")
        signed = info["content"]
        encap = signed["encap_content_info"]
        if encap["content_type"].dotted != LDS_SECURITY_OBJECT_OID:
            raise ValueError("not an LDSSecurityObject")
        content = encap["content"]
        raw = content.native if not isinstance(content.native, LdsSecurityObject) else content.contents
        lso = LdsSecurityObject.load(bytes(raw))
        lso.native  # force a full parse now, so bad bytes fail here
        return signed, lso, bytes(raw)
    except CardTamperedError:
        raise
    except Exception as exc:  # asn1crypto raises ValueError/TypeError/KeyError on bad DER
        raise _tampered(f"EF.SOD does not parse: {type(exc).__name__}",
                        "Tệp chữ ký (EF.SOD) trên chip bị hỏng.", "The signature file (EF.SOD) is damaged.") from exc


def check_hashes(lso: LdsSecurityObject, files: dict[int, bytes]) -> list[int]:
    """Compare each data group read with its hash in the SOD; returns the numbers checked."""
    algorithm = lso["hash_algorithm"]["algorithm"].native
    listed = {int(h["data_group_number"].native): bytes(h["data_group_hash_value"].native)
              for h in lso["data_group_hash_values"]}
    checked = []
    for number, content in sorted(files.items()):
        expected = listed.get(number)
        if expected is None:
            raise _tampered(f"DG{number} has no hash in EF.SOD", f"Nhóm dữ liệu DG{number} không có trong chữ ký.",
                            f"Data group DG{number} is not covered by the signature.")
        if _digest(algorithm, content) != expected:
            raise _tampered(f"DG{number} hash mismatch", f"Nhóm dữ liệu DG{number} đã bị thay đổi.",
                            f"Data group DG{number} has been changed.")
        checked.append(number)
    return checked


def _signer_certificate(signed: cms.SignedData, signer: cms.SignerInfo) -> x509.Certificate | None:
    sid = signer["sid"]
    for choice in signed["certificates"] or []:
        if choice.name != "certificate":
            continue
        cert = choice.chosen
        if sid.name == "issuer_and_serial_number":
            if (cert.issuer == sid.chosen["issuer"]
                    and cert.serial_number == sid.chosen["serial_number"].native):
                return x509.load_der_x509_certificate(cert.dump())
        elif cert.key_identifier == sid.chosen.native:
            return x509.load_der_x509_certificate(cert.dump())
    return None


def _verify_signature(cert: x509.Certificate, signer: cms.SignerInfo, data: bytes) -> None:
    key = cert.public_key()
    sig = bytes(signer["signature"].native)
    algo = signer["signature_algorithm"]
    digest_name = signer["digest_algorithm"]["algorithm"].native
    if digest_name not in _HASHES:
        raise InvalidSignature(f"digest {digest_name}")
    hash_alg = _HASHES[digest_name]()
    if isinstance(key, ec.EllipticCurvePublicKey):
        key.verify(sig, data, ec.ECDSA(hash_alg))
    elif isinstance(key, rsa.RSAPublicKey):
        if algo.signature_algo == "rsassa_pss":
            params = algo["parameters"]
            pss_hash = _HASHES[params["hash_algorithm"]["algorithm"].native]()
            key.verify(sig, data, padding.PSS(padding.MGF1(pss_hash), params["salt_length"].native), pss_hash)
        else:
            key.verify(sig, data, padding.PKCS1v15(), hash_alg)
    else:
        raise InvalidSignature("unsupported key type")


def check_signature(signed: cms.SignedData, lso_der: bytes) -> x509.Certificate:
    """Check the Document Signer's signature over the SOD; returns the DS certificate."""
    signers = signed["signer_infos"]
    if len(signers) != 1:
        raise _tampered("EF.SOD must have exactly one signer", "Chữ ký trên chip không hợp lệ.",
                        "The chip's signature is invalid.")
    signer = signers[0]
    try:
        cert = _signer_certificate(signed, signer)
    except Exception as exc:  # a damaged certificate fails to load in asn1crypto or cryptography
        raise _tampered(f"Document Signer certificate does not parse: {type(exc).__name__}",
                        "Chứng thư của nơi ký trên chip bị hỏng.", "The signer's certificate on the chip is damaged.") from exc
    if cert is None:
        raise _tampered("no Document Signer certificate in EF.SOD", "Chip thiếu chứng thư của nơi ký.",
                        "The chip lacks the signer's certificate.")
    try:
        digest_name = signer["digest_algorithm"]["algorithm"].native
        attrs = signer["signed_attrs"]
        if attrs:
            message_digest = None
            for attr in attrs:
                if attr["type"].native == "message_digest":
                    message_digest = bytes(attr["values"][0].native)
            if message_digest != _digest(digest_name, lso_der):
                raise InvalidSignature("messageDigest does not match the content")
            # The signature covers the attributes DER-encoded as a SET, not with their [0] tag.
            to_verify = b"\x31" + attrs.dump()[1:]
        else:
            to_verify = lso_der
        _verify_signature(cert, signer, to_verify)
    except Exception as exc:  # InvalidSignature, or whatever a damaged structure raises
        raise _tampered(f"Document Signer signature invalid: {type(exc).__name__}",
                        "Chữ ký số trên chip không hợp lệ.", "The chip's digital signature is invalid.") from exc
    return cert


def load_csca_certificates(folder: str | Path | None) -> list[x509.Certificate]:
    """Every certificate (PEM or DER; .pem .crt .cer .der) in the folder; unreadable files are skipped."""
    if not folder:
        return []
    out = []
    path = Path(folder)
    if not path.is_dir():
        return []
    for file in sorted(path.iterdir()):
        if file.suffix.lower() not in (".pem", ".crt", ".cer", ".der"):
            continue
        data = file.read_bytes()
        try:
            if b"-----BEGIN CERTIFICATE-----" in data:
                out.extend(x509.load_pem_x509_certificates(data))
            else:
                out.append(x509.load_der_x509_certificate(data))
        except ValueError:
            continue
    return out


def check_chain(ds: x509.Certificate, cscas: list[x509.Certificate]) -> x509.Certificate | None:
    """The CSCA that issued the DS certificate (name and signature), or None."""
    for csca in cscas:
        try:
            ds.verify_directly_issued_by(csca)
            return csca
        except Exception:  # InvalidSignature, or a name/key that does not fit: not this CSCA
            continue
    return None


def passive_authentication(sod: bytes | None, files: dict[int, bytes], csca_dir: str | Path | None,
                           now: datetime | None = None) -> PassiveAuthResult:
    """Run all three checks; raises CardTamperedError on altered data, else says how far it is verified."""
    if sod is None:
        return PassiveAuthResult("not_verified", "Chưa xác thực: chip không có tệp chữ ký (EF.SOD).",
                                 "Not verified: the chip has no signature file (EF.SOD).")
    now = now or datetime.now(timezone.utc)
    signed, lso, lso_der = parse_sod(sod)
    checked = check_hashes(lso, files)
    try:
        ds = check_signature(signed, lso_der)
    except CardTamperedError:
        raise
    except Exception as exc:  # asn1crypto parses lazily: a damaged part fails only when reached
        raise _tampered(f"EF.SOD signer data does not parse: {type(exc).__name__}",
                        "Chữ ký số trên chip không hợp lệ.", "The chip's digital signature is invalid.") from exc
    try:
        signer = ds.subject.rfc4514_string()
    except Exception:  # an odd attribute in the name; the name is only informative
        signer = None
    cscas = load_csca_certificates(csca_dir)
    if not cscas:
        return PassiveAuthResult(
            "not_verified",
            "Chưa xác thực: máy chưa được cài chứng thư gốc (CSCA) của cơ quan cấp thẻ. "
            "Dữ liệu khớp chữ ký trên chip nhưng chưa chứng minh được nguồn gốc; vui lòng đối chiếu với thẻ.",
            "Not verified: no issuer root (CSCA) certificate is installed on this station. The data matches "
            "the chip's signature but its origin is unproven; please compare it with the card.",
            checked, signer)
    csca = check_chain(ds, cscas)
    if csca is None:
        return PassiveAuthResult(
            "not_verified",
            "Chưa xác thực: chữ ký trên chip không thuộc cơ quan cấp thẻ nào mà máy tin cậy. "
            "Vui lòng đối chiếu dữ liệu với thẻ và báo nhân viên.",
            "Not verified: the chip's signer is not issued by any trusted issuer (CSCA) on this station. "
            "Please compare the data with the card and call staff.",
            checked, signer)
    result = PassiveAuthResult(
        "verified",
        "Đã xác thực: dữ liệu đọc từ chip đúng như cơ quan cấp thẻ đã ký.",
        "Verified: the data read from the chip is exactly what the issuing authority signed.",
        checked, signer)
    for cert, vi, en in ((ds, "chứng thư ký dữ liệu của chip", "the chip's signing certificate"),
                         (csca, "chứng thư gốc (CSCA) của cơ quan cấp thẻ", "the issuer's root certificate (CSCA)")):
        if now > cert.not_valid_after_utc:
            result = result.with_warning(f"{vi} đã hết hạn từ ngày {_day(cert.not_valid_after_utc)}.",
                                         f"{en} expired on {_day(cert.not_valid_after_utc)}.")
        elif now < cert.not_valid_before_utc:
            result = result.with_warning(f"{vi} chỉ có hiệu lực từ ngày {_day(cert.not_valid_before_utc)}.",
                                         f"{en} is only valid from {_day(cert.not_valid_before_utc)}.")
    return result


def card_notes(result: PassiveAuthResult, unreadable: list[str], card_expiry: str | None,
               today: date | None = None) -> PassiveAuthResult:
    """Add what the read itself found: fields that could not be read (never shown, so never vouched for)
    and a card past its expiry date (a warning: the data is the issuer's, the card is no longer valid)."""
    if unreadable:
        result = result.with_note(
            f"Không đọc được {len(unreadable)} mục trên chip; các mục đó không được điền sẵn, vui lòng nhập tay.",
            f"{len(unreadable)} item(s) on the chip could not be read; they are not prefilled, please type them.")
    today = today or date.today()
    try:
        expired = card_expiry is not None and date.fromisoformat(card_expiry) < today
    except ValueError:
        expired = False
    if expired:
        day = date.fromisoformat(card_expiry).strftime("%d/%m/%Y")
        result = result.with_warning(f"thẻ đã hết hạn từ ngày {day}.", f"the card expired on {day}.")
    return result
