"""Synthetic CCCD card profiles for the card simulator, tests and demos: a test CSCA and Document Signer
made here, a person made up here, and the chip files (EF.COM, DG1, DG2, DG13, EF.SOD) built and signed
from them. No real personal data is ever involved.

Profile JSON: {"description", "key": {"number", "birth_date", "expiry_date" (null: no expiry), "can"
(null: the last 6 digits)}, "auth_tries": int|null, "latency_ms": int|null, "atr": hex, "max_read":
int|null, "files": {"011E": hex, ...}} (file ids in hex, contents in hex).

Make the checked-in test card:  python -m devices.card_profile tests/cards
"""
import hashlib
import io
import json
import sys
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from asn1crypto import algos, cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from devices import card_tlv, cccd
from devices.mrz import bac_document_number, build_td1
from devices.pace import build_card_access
from devices.passive_auth import LDS_SECURITY_OBJECT_OID, DataGroupHash, LdsSecurityObject

# A plausible ATR for a contactless eMRTD seen through a PC/SC reader (ISO 14443-4, no historical bytes
# beyond the PC/SC part 3 ones).
DEFAULT_ATR = "3B8880010000000000000000"

SYNTHETIC_PERSON = {
    "id_number": "001090012345",
    "full_name": "Nguyễn Văn Thử",
    "birth_date": "1990-05-17",
    "sex": "Nam",
    "nationality": "Việt Nam",
    "ethnicity": "Kinh",
    "religion": "Không",
    "place_of_origin": "Xã Thử Nghiệm, Huyện Mẫu, Tỉnh Giả Định",
    "residence": "Số 1 Đường Kiểm Thử, Phường Mô Phỏng, Quận Ví Dụ, Thành phố Hà Nội",
    "identifying_marks": "Nốt ruồi C:1cm dưới đuôi mắt trái",
    "issue_date": "2021-04-15",
    "expiry_date": "2030-05-17",
    "father_name": "Nguyễn Văn Cha",
    "mother_name": "Trần Thị Mẹ",
    "spouse_name": "Lê Thị Vợ",
    "old_id_number": "012345678",
}


@dataclass
class TestPki:
    csca_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    csca_cert: x509.Certificate
    ds_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    ds_cert: x509.Certificate
    kind: str = "ec"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dvc-kiosk TEST ONLY"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _new_key(kind: str):
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_test_pki(label: str = "Test CSCA", kind: str = "ec", ds_expired: bool = False) -> TestPki:
    """A throwaway CSCA and a Document Signer it issued (EC P-256, or RSA 2048 with kind="rsa" or
    "rsa-pss"), valid around today; with ds_expired, a Document Signer certificate that ran out last year
    (as happens when its cards outlive it)."""
    now = datetime.now(timezone.utc) - timedelta(days=1)
    csca_key = _new_key("rsa" if kind.startswith("rsa") else "ec")
    csca_name = _name(f"dvc-kiosk {label}")
    csca_cert = (x509.CertificateBuilder().subject_name(csca_name).issuer_name(csca_name)
                 .public_key(csca_key.public_key()).serial_number(x509.random_serial_number())
                 .not_valid_before(now - timedelta(days=1000) if ds_expired else now)
                 .not_valid_after(now + timedelta(days=3650 * 3))
                 .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                 .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                critical=True)
                 .sign(csca_key, hashes.SHA256()))
    ds_key = _new_key("rsa" if kind.startswith("rsa") else "ec")
    ds_cert = (x509.CertificateBuilder().subject_name(_name(f"dvc-kiosk {label} Document Signer"))
               .issuer_name(csca_name).public_key(ds_key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(days=800) if ds_expired else now)
               .not_valid_after(now - timedelta(days=365) if ds_expired else now + timedelta(days=3650 * 2))
               .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                              critical=True)
               .sign(csca_key, hashes.SHA256()))
    return TestPki(csca_key, csca_cert, ds_key, ds_cert, kind)


def build_sod(data_groups: dict[int, bytes], pki: TestPki) -> bytes:
    """EF.SOD over the given data groups: SHA-256 hashes, signed by the test Document Signer."""
    lso = LdsSecurityObject({
        "version": 0,
        "hash_algorithm": {"algorithm": "sha256"},
        "data_group_hash_values": [DataGroupHash({"data_group_number": n,
                                                  "data_group_hash_value": hashlib.sha256(c).digest()})
                                   for n, c in sorted(data_groups.items())],
    }).dump()
    ds_asn1 = asn1_x509.Certificate.load(pki.ds_cert.public_bytes(serialization.Encoding.DER))
    signed_attrs = cms.CMSAttributes([
        cms.CMSAttribute({"type": "content_type", "values": [cms.ContentType(LDS_SECURITY_OBJECT_OID)]}),
        cms.CMSAttribute({"type": "message_digest", "values": [hashlib.sha256(lso).digest()]}),
    ])
    if pki.kind == "rsa-pss":
        signature = pki.ds_key.sign(signed_attrs.dump(), padding.PSS(padding.MGF1(hashes.SHA256()), 32),
                                    hashes.SHA256())
        algorithm = algos.SignedDigestAlgorithm({"algorithm": "rsassa_pss", "parameters": {
            "hash_algorithm": {"algorithm": "sha256"},
            "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": {"algorithm": "sha256"}},
            "salt_length": 32, "trailer_field": "trailer_field_bc"}})
    elif pki.kind == "rsa":
        signature = pki.ds_key.sign(signed_attrs.dump(), padding.PKCS1v15(), hashes.SHA256())
        algorithm = algos.SignedDigestAlgorithm({"algorithm": "sha256_rsa"})
    else:
        signature = pki.ds_key.sign(signed_attrs.dump(), ec.ECDSA(hashes.SHA256()))
        algorithm = algos.SignedDigestAlgorithm({"algorithm": "sha256_ecdsa"})
    signer = cms.SignerInfo({
        "version": "v1",
        "sid": cms.SignerIdentifier({"issuer_and_serial_number": cms.IssuerAndSerialNumber({
            "issuer": ds_asn1.issuer, "serial_number": ds_asn1.serial_number})}),
        "digest_algorithm": {"algorithm": "sha256"},
        "signed_attrs": signed_attrs,
        "signature_algorithm": algorithm,
        "signature": signature,
    })
    signed = cms.SignedData({
        "version": "v3",
        "digest_algorithms": [{"algorithm": "sha256"}],
        "encap_content_info": {"content_type": LDS_SECURITY_OBJECT_OID,
                               "content": core.ParsableOctetString(lso)},
        "certificates": [ds_asn1],
        "signer_infos": [signer],
    })
    info = cms.ContentInfo({"content_type": "signed_data", "content": signed})
    return card_tlv.encode(0x77, info.dump())


def synthetic_photo() -> bytes:
    """DG2 with a tiny grey JPEG inside an ISO 19794-5 style record (structure only; not a real face)."""
    from PIL import Image
    buf = io.BytesIO()
    Image.new("L", (24, 32), 128).save(buf, "JPEG", quality=50)
    face = b"FAC\x00010\x00" + bytes(12) + buf.getvalue()
    bit = card_tlv.encode(0x7F60, card_tlv.encode(0xA1, card_tlv.encode(0x80, b"\x01\x01"))
                          + card_tlv.encode(0x5F2E, face))
    return card_tlv.encode(0x75, card_tlv.encode(0x7F61, card_tlv.encode(0x02, b"\x01") + bit))


def _mrz_name(full_name: str) -> tuple[str, str]:
    import unicodedata
    plain = unicodedata.normalize("NFD", full_name.replace("Đ", "D").replace("đ", "d"))
    plain = "".join(c for c in plain if not unicodedata.combining(c)).upper()
    parts = plain.split()
    return parts[0], " ".join(parts[1:])


def build_profile(person: dict | None = None, pki: TestPki | None = None, *, max_read: int | None = None,
                  with_photo: bool = True, pace_parameter_id: int | None = 13,
                  description: str = "Synthetic CCCD (test data only)", dg13_layout: str = "wrapped",
                  can: str | None = None, auth_tries: int | None = None, dg13: bytes | None = None) -> dict:
    """A signed synthetic card. With pace_parameter_id (13 = brainpoolP256r1, 12 = NIST P-256) the chip
    also offers PACE (ECDH generic mapping, AES-128) in EF.CardAccess; None makes a BAC-only chip.
    dg13_layout: "wrapped" as issued cards lay DG13 out, or "flat" (see cccd.build_dg13).
    A person with ``no_expiry`` True (and no expiry_date) is a "Không thời hạn" card: fillers in the MRZ's
    expiry field. ``can``: a PACE password other than the last 6 digits (a chip where that guess is
    wrong). ``auth_tries``: after this many wrong keys the chip answers 69 83 to every further try."""
    person = dict(SYNTHETIC_PERSON if person is None else person)
    if person.get("no_expiry"):
        person.pop("expiry_date", None)
    pki = pki or make_test_pki()
    birth = date.fromisoformat(person["birth_date"])
    expiry = date.fromisoformat(person["expiry_date"]) if person.get("expiry_date") else None
    surname, given = _mrz_name(person["full_name"])
    number = person["id_number"]
    mrz = build_td1(document_number=bac_document_number(number), optional_1=number, birth=birth,
                    sex="M" if person.get("sex") == "Nam" else "F", expiry=expiry, nationality="VNM",
                    optional_2="", surname=surname, given=given)
    dgs = {1: cccd.build_dg1(mrz), 13: dg13 if dg13 is not None else cccd.build_dg13(person, layout=dg13_layout)}
    if with_photo:
        dgs[2] = synthetic_photo()
    com = cccd.build_com([0x61] + ([0x75] if with_photo else []) + [0x6D])
    files = {cccd.EF_COM: com, cccd.EF_DG1: dgs[1], cccd.EF_DG13: dgs[13], cccd.EF_SOD: build_sod(dgs, pki)}
    if with_photo:
        files[cccd.EF_DG2] = dgs[2]
    if pace_parameter_id is not None:
        files[cccd.EF_CARD_ACCESS] = build_card_access(pace_parameter_id)
    return {
        "description": description,
        "key": {"number": number, "birth_date": birth.isoformat(),
                "expiry_date": expiry.isoformat() if expiry else None, "can": can},
        "auth_tries": auth_tries,
        "atr": DEFAULT_ATR,
        "max_read": max_read,
        "files": {f"{fid:04X}": content.hex() for fid, content in files.items()},
    }


def write_test_card(folder: str | Path, *, dg13_layout: str = "wrapped", no_expiry: bool = False) -> tuple[Path, Path]:
    """Write a synthetic profile and the CSCA certificate that verifies it (the keys are not kept)."""
    folder = Path(folder)
    (folder / "csca").mkdir(parents=True, exist_ok=True)
    pki = make_test_pki()
    person = dict(SYNTHETIC_PERSON, no_expiry=True) if no_expiry else None
    profile = build_profile(person, pki=pki, dg13_layout=dg13_layout)
    profile_path = folder / "synthetic_cccd.json"
    profile_path.write_text(json.dumps(profile, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    csca_path = folder / "csca" / "test_csca.pem"
    csca_path.write_bytes(pki.csca_cert.public_bytes(serialization.Encoding.PEM))
    return profile_path, csca_path


if __name__ == "__main__":
    for p in write_test_card(sys.argv[1] if len(sys.argv) > 1 else "tests/cards"):
        print(p)
