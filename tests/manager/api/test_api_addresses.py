"""Peers' Manager addresses (appliance.manager.addresses; docs/manager.md "Peer Manager
addresses"): the form, the name in the peer's certificate, what the name resolves to, on
announce, on contracts and signatures, in directory lookups and on every connection."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest
from apitest import Api, assert_fsc_error, hash_of, sign
from contracttest import OIN_A, OIN_B, Group

from appliance.manager.addresses import AddressError, check_manager_address, refusal
from appliance.manager.peer_client import PeerCallError, PeerClient
from appliance.manager.service import ManagerError

NAME = "manager-01.test.example"  # in A's certificate (contracttest.dns_names)


@pytest.mark.parametrize(
    "address",
    [
        "https://169.254.169.254:443",
        "https://127.0.0.1:8443",
        "https://[::1]:8443",
        "https://[::ffff:127.0.0.1]:8443",
        "https://2130706433:8443",  # 127.0.0.1 to inet_aton
        "https://127.1:8443",
        "https://0x7f.1:8443",
        "https://localhost:8443",
        "http://a.example.nl:8443",
        "https://a.example.nl",
        "https://a.example.nl:0",
        "https://user@a.example.nl:8443",
        "https://a.example.nl:8443/path",
        "https://a.example.nl:8443?q",
        "https://-a.example.nl:8443",
        "https://a..example.nl:8443",
        "https://a.example.nl.:8443",
        "https://ä.example.nl:8443",
    ],
)
def test_what_is_no_manager_address(address: str) -> None:
    with pytest.raises(AddressError):
        check_manager_address(address)


def test_the_normal_form() -> None:
    assert check_manager_address("https://A.Example.NL:8443/") == "https://a.example.nl:8443"


@pytest.mark.parametrize(
    ("ip", "allow_loopback", "refused"),
    [
        ("127.0.0.1", False, True),
        ("127.0.0.1", True, False),
        ("::1", False, True),
        ("::ffff:127.0.0.1", False, True),
        ("169.254.169.254", True, True),
        ("fe80::1%eth0", True, True),
        ("0.0.0.0", True, True),  # noqa: S104
        ("::", True, True),
        ("224.0.0.1", True, True),
        ("ff02::1", True, True),
        ("192.0.2.10", False, False),
        ("10.1.2.3", False, False),
        ("2001:db8::1", False, False),
    ],
)
def test_which_resolutions_are_refused(ip: str, allow_loopback: bool, refused: bool) -> None:
    assert (refusal(ip, allow_loopback=allow_loopback) is not None) is refused


def _client(table: dict[str, tuple[str, int]], *, allow_loopback: bool = False) -> PeerClient:
    return PeerClient(
        ssl_context=ssl.create_default_context(),
        own_address="https://self.test.example:8443",
        timeout_seconds=2,
        resolve=table,
        allow_loopback=allow_loopback,
    )


def test_a_name_resolving_to_loopback_is_refused_unless_allowed() -> None:
    address = f"https://{NAME}:8443"
    table = {f"{NAME}:8443": ("127.0.0.1", 8443)}
    with pytest.raises(AddressError, match="loopback"):
        asyncio.run(_client(table).check_resolution(address))
    asyncio.run(_client(table, allow_loopback=True).check_resolution(address))
    metadata = {f"{NAME}:8443": ("169.254.169.254", 8443)}
    with pytest.raises(AddressError, match="link-local"):
        asyncio.run(_client(metadata, allow_loopback=True).check_resolution(address))


def test_every_connection_is_checked_again() -> None:
    # Learnt when it resolved elsewhere, now it resolves to loopback: no connection is made.
    client = _client({f"{NAME}:8443": ("127.0.0.1", 8443)})

    async def call() -> None:
        try:
            await client.peer_info(f"https://{NAME}:8443")
        finally:
            await client.close()

    with pytest.raises(PeerCallError, match="loopback"):
        asyncio.run(call())


def test_announce_takes_only_a_name_of_the_senders_certificate(
    bare_provider: Api, group: Group
) -> None:
    result = bare_provider.announce(peer=group[OIN_A], address="https://gw.test.example:8443")
    assert result.status_code == 200, result.text

    for address, why in (
        ("https://manager-02.test.example:8443", "does not name host"),
        ("https://169.254.169.254:443", "not an IP address"),
    ):
        result = bare_provider.announce(peer=group[OIN_A], address=address)
        assert why in assert_fsc_error(result, 400, "ERROR_CODE_REQUEST_INVALID")["message"]
    peer = bare_provider.store.get_peer(OIN_A)
    assert peer is not None
    assert peer.manager_address == "https://gw.test.example:8443"


def test_announce_checks_the_resolution(bare_provider: Api, group: Group) -> None:
    bare_provider.service.client = _client({f"{NAME}:8443": ("169.254.169.254", 8443)})

    result = bare_provider.announce(peer=group[OIN_A], address=f"https://{NAME}:8443")

    assert "link-local" in assert_fsc_error(result, 400, "ERROR_CODE_REQUEST_INVALID")["message"]
    assert bare_provider.store.get_peer(OIN_A) is None


def test_a_contract_with_another_peers_address_is_refused_before_it_is_stored(
    provider: Api, connection: dict[str, Any], group: Group
) -> None:
    result = provider.post_contract(
        connection,
        sign(connection, group[OIN_A]),
        peer=group[OIN_A],
        address="https://manager-02.test.example:8443",  # B's name, sent by A
    )

    assert_fsc_error(result, 400, "ERROR_CODE_REQUEST_INVALID")
    assert provider.store.get_contract(hash_of(connection)) is None


class _Directory(PeerClient):
    """The directory answers a peer listing with ``listed`` as the peer's address."""

    listed = ""

    async def peers(self, address: str, peer_ids: list[str]) -> list[dict[str, Any]]:
        return [{"id": pid, "name": "Peer", "manager_address": self.listed} for pid in peer_ids]


@pytest.mark.parametrize(
    ("listed", "table"),
    [
        ("https://169.254.169.254:443", {}),
        ("https://meta.test.example:443", {"meta.test.example:443": ("169.254.169.254", 443)}),
        ("https://lo.test.example:443", {"lo.test.example:443": ("127.0.0.1", 443)}),
    ],
)
def test_directory_lookups_follow_the_same_rules(
    consumer: Api, listed: str, table: dict[str, tuple[str, int]]
) -> None:
    directory = _Directory(
        ssl_context=ssl.create_default_context(), own_address="https://x.test.example:1"
    )
    directory.resolve = table
    directory.listed = listed
    consumer.service.client = directory

    with pytest.raises(ManagerError, match="directory"):
        asyncio.run(consumer.service.manager_address(OIN_B))
    peer = consumer.store.get_peer(OIN_B)
    assert peer is None or peer.manager_address != listed
