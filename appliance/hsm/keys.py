"""The organisation key pair: generated inside the token, never extractable, never exported.

The private key is created with ``CKA_TOKEN``, ``CKA_PRIVATE``, ``CKA_SENSITIVE``, not
``CKA_EXTRACTABLE``, ``CKA_SIGN`` only. The private key, public key and (later) the certificate
share the configured label and a random 16-byte ``CKA_ID``. Only the public key ever leaves
the token, read from the public key object (or the certificate).

Sluis signs only with a private key that carries every protection attribute of
:data:`PROTECTION`: sensitive and not extractable now, always sensitive and never extractable
since it was made, and generated in the token (``CKA_LOCAL``), not imported.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

import pkcs11.exceptions as p11e
from asn1crypto.core import OctetString
from asn1crypto.keys import ECDomainParameters
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from pkcs11 import Attribute, KeyType, MechanismFlag, Object, ObjectClass, PrivateKey, Session
from pkcs11.util.ec import encode_named_curve_parameters

from appliance.hsm.errors import (
    HsmError,
    KeyExistsError,
    KeyNotFoundError,
    UnprotectedKeyError,
    translated,
)
from appliance.hsm.settings import HsmSettings
from appliance.hsm.token import load_module, open_session

KeyAlgorithm = Literal["ec-p256", "ec-p384", "rsa-3072"]
KEY_ALGORITHMS: tuple[str, ...] = get_args(KeyAlgorithm)
SigningPublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

_EC_CURVES: dict[str, str] = {"ec-p256": "secp256r1", "ec-p384": "secp384r1"}
_RSA_BITS: dict[str, int] = {"rsa-3072": 3072}
_CURVE_ALGORITHMS: dict[str, str] = {
    "secp256r1": "ec-p256",
    "secp384r1": "ec-p384",
    "secp521r1": "ec-p521",
}
_CLASS_NAMES: dict[int, str] = {
    ObjectClass.PRIVATE_KEY: "private-key",
    ObjectClass.PUBLIC_KEY: "public-key",
    ObjectClass.CERTIFICATE: "certificate",
    ObjectClass.SECRET_KEY: "secret-key",
    ObjectClass.DATA: "data",
}


@dataclass(frozen=True)
class KeyInfo:
    """A key pair in the token."""

    token_label: str
    label: str
    key_id: bytes
    algorithm: str

    @property
    def id_hex(self) -> str:
        return self.key_id.hex()


# (name shown, attribute, the value a protected key has)
PROTECTION: tuple[tuple[str, Attribute, bool], ...] = (
    ("sensitive", Attribute.SENSITIVE, True),
    ("non-extractable", Attribute.EXTRACTABLE, False),
    ("always-sensitive", Attribute.ALWAYS_SENSITIVE, True),
    ("never-extractable", Attribute.NEVER_EXTRACTABLE, True),
    ("local", Attribute.LOCAL, True),
)


def key_protection(key: Object) -> dict[str, bool | None]:
    """Whether ``key`` has each protection of :data:`PROTECTION` (None: the token hides it)."""
    result: dict[str, bool | None] = {}
    for name, attribute, wanted in PROTECTION:
        value = _attr(key, attribute)
        result[name] = None if value is None else bool(value) == wanted
    return result


def missing_protection(protection: dict[str, bool | None]) -> list[str]:
    """The protections a key lacks (one the token does not report counts as lacking)."""
    return [name for name, present in protection.items() if present is not True]


def check_protection(key: Object, settings: HsmSettings) -> None:
    """Refuse a private key that lacks a protection attribute, naming what it lacks."""
    with translated(settings, "reading the key's protection attributes"):
        missing = missing_protection(key_protection(key))
    if missing:
        raise UnprotectedKeyError(
            f"key {settings.key_label!r} in token {settings.token_label!r} is not protected "
            f"as the organisation key must be; it lacks: {', '.join(missing)}. It was imported or "
            "created extractable; generate a new key in the token (sluis hsm generate-key) and "
            "re-key (docs/keys.md)"
        )


@dataclass(frozen=True)
class ObjectInfo:
    """One object in the token, as ``sluis hsm list`` shows it."""

    kind: str
    label: str
    id_hex: str
    algorithm: str | None = None
    sensitive: bool | None = None
    extractable: bool | None = None
    subject: str | None = None
    oin: str | None = None
    not_after: datetime | None = None
    days_to_expiry: int | None = None
    # Private keys: each protection of PROTECTION, present or not (None: the token hides it).
    protection: dict[str, bool | None] | None = None

    @property
    def unprotected(self) -> list[str]:
        """Protections this private key lacks ([] for other objects)."""
        return missing_protection(self.protection) if self.protection is not None else []


def _attr(obj: Object, attribute: Attribute, default: Any = None) -> Any:
    """An attribute of ``obj``, or ``default`` when the object has none or hides it."""
    try:
        return obj[attribute]
    except (p11e.AttributeTypeInvalid, p11e.AttributeSensitive, NotImplementedError):
        return default


def key_algorithm_name(public_key: SigningPublicKey) -> str:
    """``ec-p256``, ``ec-p384``, ``rsa-3072``, ... for a public key."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return _CURVE_ALGORITHMS.get(public_key.curve.name, f"ec-{public_key.curve.name}")
    return f"rsa-{public_key.key_size}"


def is_tpm2_pkcs11(settings: HsmSettings) -> bool:
    """Whether the module is tpm2-pkcs11 (the TPM 2.0 of the box, docs/keys.md)."""
    return load_module(settings.module).manufacturer_id.startswith("tpm2-software")


def generate_key(settings: HsmSettings, algorithm: KeyAlgorithm = "ec-p256") -> KeyInfo:
    """Generate the organisation key pair inside the token (label ``settings.key_label``)."""
    if algorithm not in KEY_ALGORITHMS:
        raise HsmError(f"unknown key algorithm {algorithm!r}; choose one of {KEY_ALGORITHMS}")
    label = settings.key_label
    key_id = secrets.token_bytes(16)
    private_template: dict[Attribute, Any] = {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
        Attribute.DECRYPT: False,
        Attribute.UNWRAP: False,
        Attribute.DERIVE: False,
    }
    public_template: dict[Attribute, Any] = {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: False,
        Attribute.VERIFY: True,
        Attribute.ENCRYPT: False,
        Attribute.WRAP: False,
    }
    capabilities = MechanismFlag.SIGN | MechanismFlag.VERIFY
    with (
        open_session(settings, rw=True) as session,
        translated(settings, f"generating a {algorithm} key"),
    ):
        if is_tpm2_pkcs11(settings):  # the module is loaded (under the login lock) by now
            # tpm2-pkcs11 makes every key with the TPM's sign and decrypt attributes and
            # refuses a template that says otherwise (CKR_GENERAL_ERROR, "attr mismatch").
            private_template[Attribute.DECRYPT] = True
            public_template[Attribute.ENCRYPT] = True
            capabilities |= MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT
        existing = list(session.get_objects({Attribute.LABEL: label}))
        if existing:
            kinds = sorted({_CLASS_NAMES.get(o[Attribute.CLASS], "object") for o in existing})
            raise KeyExistsError(
                f"token {settings.token_label!r} already holds {', '.join(kinds)} labelled "
                f"{label!r}; refusing to generate another key with that label"
            )
        common: dict[str, Any] = {
            "store": True,
            "id": key_id,
            "label": label,
            "capabilities": capabilities,
            "private_template": private_template,
        }
        if algorithm in _EC_CURVES:
            public_template[Attribute.EC_PARAMS] = encode_named_curve_parameters(
                _EC_CURVES[algorithm]
            )
            public, private = session.generate_keypair(
                KeyType.EC, public_template=public_template, **common
            )
        else:
            public, private = session.generate_keypair(
                KeyType.RSA, _RSA_BITS[algorithm], public_template=public_template, **common
            )
        # Trust, but verify: a token that ignored the template must not keep a weak key.
        if private[Attribute.EXTRACTABLE] or not private[Attribute.SENSITIVE]:
            private.destroy()
            public.destroy()
            raise HsmError(
                f"token {settings.token_label!r} created key {label!r} extractable or not "
                "sensitive despite the template; the key was destroyed"
            )
    return KeyInfo(
        token_label=settings.token_label, label=label, key_id=key_id, algorithm=algorithm
    )


def _decode_ec_point(point: bytes, curve: ec.EllipticCurve) -> bytes:
    """The raw X9.62 point from CKA_EC_POINT (DER OCTET STRING per the spec, or raw)."""
    size = (curve.key_size + 7) // 8
    if len(point) == 2 * size + 1 and point[0] == 0x04:
        return point  # raw uncompressed point (some tokens)
    decoded = OctetString.load(point).native
    if not isinstance(decoded, bytes):
        raise HsmError("CKA_EC_POINT is neither a DER OCTET STRING nor a raw point")
    return decoded


def _public_key_from_object(obj: Object) -> SigningPublicKey:
    key_type = obj[Attribute.KEY_TYPE]
    if key_type == KeyType.EC:
        params = ECDomainParameters.load(obj[Attribute.EC_PARAMS])
        if params.name != "named":
            raise HsmError("the token key uses explicit EC parameters, not a named curve")
        curve = ec.get_curve_for_oid(x509.ObjectIdentifier(params.chosen.dotted))
        raw = _decode_ec_point(obj[Attribute.EC_POINT], curve())
        return ec.EllipticCurvePublicKey.from_encoded_point(curve(), raw)
    if key_type == KeyType.RSA:
        modulus = int.from_bytes(obj[Attribute.MODULUS], "big")
        exponent = int.from_bytes(obj[Attribute.PUBLIC_EXPONENT], "big")
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    raise HsmError(f"unsupported key type {key_type!r} (only EC and RSA keys sign here)")


def require_protected_key(settings: HsmSettings) -> None:
    """Refuse to start with an organisation key that lacks a protection attribute.

    For the TLS listeners, which hand the key to OpenSSL: call before loading it (not while
    holding the login lock; this opens a session, which takes the lock itself).
    """
    with open_session(settings) as session:
        check_protection(find_private_key(session, settings), settings)


def find_private_key(session: Session, settings: HsmSettings) -> PrivateKey:
    """The organisation's private key object (by label), a token object only: pkcs11-provider
    may keep a session-object copy of the key with the same label in a process whose TLS
    context uses it, and that copy is no second key."""
    template = {
        Attribute.CLASS: ObjectClass.PRIVATE_KEY,
        Attribute.LABEL: settings.key_label,
        Attribute.TOKEN: True,
    }
    with translated(settings, "looking for the private key"):
        found = list(session.get_objects(template))
        if not found:
            raise p11e.NoSuchKey(f"no private key labelled {settings.key_label!r}")
        if len(found) > 1:
            raise p11e.MultipleObjectsReturned(f"{len(found)} private keys")
    key = found[0]
    if not isinstance(key, PrivateKey):
        raise KeyNotFoundError(
            f"token {settings.token_label!r} holds no private key labelled {settings.key_label!r}"
        )
    return key


def read_public_key(session: Session, settings: HsmSettings) -> SigningPublicKey:
    """The organisation's public key: from the public key object, else from its certificate."""
    label = settings.key_label
    with translated(settings, "reading the public key"):
        publics = list(
            session.get_objects({Attribute.CLASS: ObjectClass.PUBLIC_KEY, Attribute.LABEL: label})
        )
        if len(publics) > 1:
            raise HsmError(
                f"token {settings.token_label!r} holds {len(publics)} public keys labelled "
                f"{label!r}; remove the duplicates"
            )
        if publics:
            return _public_key_from_object(publics[0])
        certs = list(
            session.get_objects({Attribute.CLASS: ObjectClass.CERTIFICATE, Attribute.LABEL: label})
        )
    if certs:
        public = x509.load_der_x509_certificate(certs[0][Attribute.VALUE]).public_key()
        if isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            return public
    raise KeyNotFoundError(
        f"token {settings.token_label!r} holds no public key or certificate labelled {label!r}"
    )


def public_key(settings: HsmSettings) -> SigningPublicKey:
    """The public half of the organisation key (as a ``cryptography`` public key)."""
    with open_session(settings) as session:
        return read_public_key(session, settings)


def _oin(name: x509.Name) -> str | None:
    values = name.get_attributes_for_oid(NameOID.SERIAL_NUMBER)
    return str(values[0].value) if values else None


def _describe(obj: Object, now: datetime) -> ObjectInfo:
    object_class = obj[Attribute.CLASS]
    kind = _CLASS_NAMES.get(object_class, f"class-{int(object_class):#x}")
    label = _attr(obj, Attribute.LABEL, "") or ""
    id_hex = (_attr(obj, Attribute.ID, b"") or b"").hex()
    if object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
        algorithm: str | None
        key_type = _attr(obj, Attribute.KEY_TYPE)
        if key_type == KeyType.EC:
            try:
                params = ECDomainParameters.load(obj[Attribute.EC_PARAMS])
                curve = ec.get_curve_for_oid(x509.ObjectIdentifier(params.chosen.dotted))()
                algorithm = _CURVE_ALGORITHMS.get(curve.name, f"ec-{curve.name}")
            except (p11e.PKCS11Error, ValueError, LookupError):
                algorithm = "ec"
        elif key_type == KeyType.RSA:
            modulus = _attr(obj, Attribute.MODULUS, b"")
            algorithm = f"rsa-{len(modulus) * 8}" if modulus else "rsa"
        else:
            algorithm = getattr(key_type, "name", None)
        if object_class != ObjectClass.PRIVATE_KEY:
            return ObjectInfo(kind, label, id_hex, algorithm)
        return ObjectInfo(
            kind,
            label,
            id_hex,
            algorithm,
            _attr(obj, Attribute.SENSITIVE),
            _attr(obj, Attribute.EXTRACTABLE),
            protection=key_protection(obj),
        )
    if object_class == ObjectClass.CERTIFICATE:
        value = _attr(obj, Attribute.VALUE)
        try:
            cert = x509.load_der_x509_certificate(value)
        except (TypeError, ValueError):
            return ObjectInfo(kind, label, id_hex)
        public = cert.public_key()
        algorithm = (
            key_algorithm_name(public)
            if isinstance(public, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
            else None
        )
        not_after = cert.not_valid_after_utc
        return ObjectInfo(
            kind,
            label,
            id_hex,
            algorithm,
            subject=cert.subject.rfc4514_string(),
            oin=_oin(cert.subject),
            not_after=not_after,
            days_to_expiry=(not_after - now).days,
        )
    return ObjectInfo(kind, label, id_hex)


def list_objects(settings: HsmSettings) -> list[ObjectInfo]:
    """Every object the user can see in the token: keys and certificates, with details."""
    now = datetime.now(UTC)
    order = {"private-key": 0, "public-key": 1, "certificate": 2}
    with open_session(settings) as session, translated(settings, "listing objects"):
        # Token objects only: in a long-running process pkcs11-provider leaves session objects
        # of its own after TLS handshakes (copies of the private key, unlabelled public keys),
        # which made the controller list the organisation key two or three times.
        infos = [_describe(obj, now) for obj in session.get_objects({Attribute.TOKEN: True})]
    return sorted(infos, key=lambda i: (i.label, order.get(i.kind, 9), i.id_hex))
