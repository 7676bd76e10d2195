"""The token verifier on its own: time, the signature cache, rotation of the signer."""

from __future__ import annotations

import time

import pytest
from inwaytest import ADDRESS, CA, GROUP_ID, OIN_OWN, OTHER, OWN, PEER, SERVICE, token

from appliance.inway.certificates import SigningCertificates
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
