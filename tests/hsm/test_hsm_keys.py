"""The organisation key: generated in the token, never extractable; listing and public key."""

from __future__ import annotations

from collections.abc import Callable

import pkcs11.exceptions as p11e
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pkcs11 import Attribute, ObjectClass

from appliance.hsm.errors import KeyExistsError
from appliance.hsm.keys import generate_key, list_objects, public_key
from appliance.hsm.settings import HsmSettings
from appliance.hsm.token import mechanisms, open_session

MakeToken = Callable[..., HsmSettings]


@pytest.mark.parametrize("algorithm", ["ec-p256", "ec-p384", "rsa-3072"])
def test_private_key_is_sensitive_and_not_extractable(
    algorithm: str, token_for: Callable[[str], HsmSettings]
) -> None:
    settings = token_for(algorithm)
    with open_session(settings) as session:
        private = session.get_key(ObjectClass.PRIVATE_KEY, label=settings.key_label)
        public = session.get_key(ObjectClass.PUBLIC_KEY, label=settings.key_label)
        assert private[Attribute.TOKEN] is True
        assert private[Attribute.PRIVATE] is True
        assert private[Attribute.SENSITIVE] is True
        assert private[Attribute.EXTRACTABLE] is False
        assert private[Attribute.NEVER_EXTRACTABLE] is True
        assert private[Attribute.ALWAYS_SENSITIVE] is True
        assert private[Attribute.LOCAL] is True  # generated in the token, not imported
        assert private[Attribute.SIGN] is True
        assert private[Attribute.DECRYPT] is False
        assert len(private[Attribute.ID]) == 16
        assert private[Attribute.ID] == public[Attribute.ID]
        secret = Attribute.VALUE if algorithm.startswith("ec") else Attribute.PRIVATE_EXPONENT
        with pytest.raises(p11e.AttributeSensitive):
            private[secret]


def test_generate_refuses_existing_label(p256_token: HsmSettings) -> None:
    with pytest.raises(KeyExistsError, match=p256_token.key_label):
        generate_key(p256_token, "ec-p256")


def test_public_key_types(token_for: Callable[[str], HsmSettings]) -> None:
    p256 = public_key(token_for("ec-p256"))
    assert isinstance(p256, ec.EllipticCurvePublicKey)
    assert p256.curve.name == "secp256r1"
    p384 = public_key(token_for("ec-p384"))
    assert isinstance(p384, ec.EllipticCurvePublicKey)
    assert p384.curve.name == "secp384r1"
    rsa_key = public_key(token_for("rsa-3072"))
    assert isinstance(rsa_key, rsa.RSAPublicKey)
    assert rsa_key.key_size == 3072
    assert rsa_key.public_numbers().e == 65537


def test_list_objects_shows_the_key_pair(p256_token: HsmSettings) -> None:
    objects = [o for o in list_objects(p256_token) if o.label == p256_token.key_label]
    kinds = {o.kind: o for o in objects}
    assert set(kinds) == {"private-key", "public-key"}
    private = kinds["private-key"]
    assert private.algorithm == "ec-p256"
    assert private.sensitive is True
    assert private.extractable is False
    assert private.id_hex == kinds["public-key"].id_hex
    assert len(private.id_hex) == 32


def test_mechanisms_of_softhsm(p256_token: HsmSettings) -> None:
    names = mechanisms(p256_token)
    assert "CKM_ECDSA" in names
    assert "CKM_SHA256_RSA_PKCS_PSS" in names
    assert all(name.startswith("CKM_") for name in names)


def test_fresh_token_has_no_objects(make_token: MakeToken) -> None:
    settings = make_token("empty-token", generate=False)
    assert list_objects(settings) == []
