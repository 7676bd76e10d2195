"""The token verifier on its own: time, the signature cache, rotation of the signer."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from inwaytest import ADDRESS, CA, GROUP_ID, OIN_OWN, OTHER, OWN, PEER, SERVICE, token

from appliance.errors import ConfigurationError
from appliance.inway.certificates import SigningCertificates, cluster_dir
from appliance.inway.errors import InwayError
from appliance.inway.tokens import TokenVerifier, token_from_header


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def verifier(
    clock: Clock, certificates: SigningCertificates | None = None, **kw: int
) -> TokenVerifier:
    return TokenVerifier(
        certificates or SigningCertificates([OWN.certificate]),
        address=ADDRESS,
        group_id=GROUP_ID,
        services={SERVICE},
        clock_skew=5,
        clock=clock,
        **kw,
    )


def _code(exc: pytest.ExceptionInfo[InwayError]) -> str:
    return exc.value.fsc_code


def test_a_cached_token_still_expires() -> None:
    clock = Clock()
    check = verifier(clock)
    access = token()
    assert check.verify(access, PEER.identity()).service == SERVICE
    clock.now += 301  # exp is now + 300, plus 5 s skew
    assert check.verify(access, PEER.identity()).service == SERVICE
    clock.now += 5
    with pytest.raises(InwayError) as caught:
        check.verify(access, PEER.identity())
    assert _code(caught) == "ERROR_CODE_ACCESS_TOKEN_EXPIRED"


def test_a_cached_token_is_still_bound_to_its_certificate() -> None:
    check = verifier(Clock())
    access = token()
    check.verify(access, PEER.identity())
    with pytest.raises(InwayError) as caught:
        check.verify(access, OTHER.identity())
    assert _code(caught) == "ERROR_CODE_ACCESS_TOKEN_INVALID"


def test_a_refused_token_is_not_cached() -> None:
    check = verifier(Clock())
    for _ in range(2):
        with pytest.raises(InwayError):
            check.verify("x.y.z", PEER.identity())
    assert check._cache == {}


def test_the_cache_stays_bounded() -> None:
    clock = Clock()
    check = verifier(clock, cache_size=8)
    tokens = [token(gth=f"$1$3${i:086d}") for i in range(20)]
    for access in tokens:
        check.verify(access, PEER.identity())
        assert len(check._cache) <= 8
    clock.now += 1000  # all expired: the next insert clears them
    with pytest.raises(InwayError):
        check.verify(tokens[0], PEER.identity())


def test_a_token_outliving_its_signing_certificate_is_refused() -> None:
    clock = Clock()
    short = CA.issue(OIN_OWN)
    check = verifier(clock, SigningCertificates([short.certificate]))
    access = token(signer=short, exp=int(clock.now) + 10**8)
    check.verify(access, PEER.identity())
    clock.now = short.certificate.not_valid_after_utc.timestamp() + 1
    with pytest.raises(InwayError, match="not valid now"):
        check.verify(access, PEER.identity())


@pytest.mark.parametrize(
    ("header", "expected"),
    [("abc", "abc"), ("Bearer abc", "abc"), ("bearer  abc ", "abc"), (" abc ", "abc")],
)
def test_the_header_may_carry_a_bearer_scheme(header: str, expected: str) -> None:
    assert token_from_header(header) == expected


# -- several gateway nodes of one organisation (docs/ha.md) ---------------------------------


def _chain_files(directory: Path) -> Path:
    live = directory / "organisation.pem"
    live.write_bytes(OWN.pem + CA.certificate.public_bytes(Encoding.PEM))
    return live


def test_the_other_nodes_certificates_are_accepted_while_they_are_in_the_cluster_folder(
    tmp_path: Path,
) -> None:
    live = _chain_files(tmp_path)
    node2 = CA.issue(OIN_OWN, "Dienst Registers")  # the same peer, its own key
    clock = Clock()
    check = verifier(clock, SigningCertificates.from_file(live, clock=clock))
    signed_by_node2 = token(signer=node2)
    with pytest.raises(InwayError) as caught:
        check.verify(signed_by_node2, PEER.identity())
    assert _code(caught) == "ERROR_CODE_ACCESS_TOKEN_INVALID"
    assert "not signed by this peer's Manager" in str(caught.value)

    cluster = cluster_dir(live)
    cluster.mkdir()
    (cluster / ".ansible_tmp_node2.pem").write_bytes(b"half")  # a copy being written
    (cluster / "node2.pem").write_bytes(node2.pem)
    # No restart: the unknown thumbprint makes the inway look at the folder again.
    assert check.verify(signed_by_node2, PEER.identity()).service == SERVICE
    assert check.verify(token(), PEER.identity()).service == SERVICE  # its own still

    (cluster / "node2.pem").unlink()  # the node left the organisation
    fresh = token(signer=node2, gth="$1$3$" + "B" * 86)  # not cached
    assert check.verify(fresh, PEER.identity()).service == SERVICE  # until the next look
    clock.now += 5  # the check interval
    fresh = token(signer=node2, gth="$1$3$" + "C" * 86)
    with pytest.raises(InwayError) as caught:
        check.verify(fresh, PEER.identity())
    assert _code(caught) == "ERROR_CODE_ACCESS_TOKEN_INVALID"


def test_another_peers_certificate_among_the_nodes_is_refused(tmp_path: Path) -> None:
    live = _chain_files(tmp_path)
    cluster = cluster_dir(live)
    cluster.mkdir()
    (cluster / "elders.pem").write_bytes(OTHER.pem)
    with pytest.raises(ConfigurationError, match="names peer"):
        SigningCertificates.from_file(live)

    (cluster / "elders.pem").unlink()
    certificates = SigningCertificates.from_file(live)
    check = verifier(Clock(), certificates)
    node2 = CA.issue(OIN_OWN, "Dienst Registers")
    (cluster / "node2.pem").write_bytes(node2.pem)
    (cluster / "elders.pem").write_bytes(OTHER.pem)  # added while running: the set is kept
    for signer in (node2, OTHER):
        with pytest.raises(InwayError) as caught:
            check.verify(token(signer=signer), PEER.identity())
        assert _code(caught) == "ERROR_CODE_ACCESS_TOKEN_INVALID"
    (cluster / "elders.pem").unlink()
    assert check.verify(token(signer=node2), PEER.identity()).service == SERVICE
