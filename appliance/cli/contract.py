"""``sluis contract``: propose, inspect, accept, reject and revoke FSC contracts.

The command works on this appliance's Manager database and signs in the HSM; the running
Manager (``sluis serve manager``) delivers the contract or signature to the other peers,
retrying until they have it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from appliance.cli.groups import add_command, add_group
from appliance.config import load_config
from appliance.errors import ConfigurationError
from appliance.hsm.keys import public_key
from appliance.manager.contracts.signatures import SignatureType
from appliance.manager.peer_client import PeerClient
from appliance.manager.proposals import connection_content, publication_content
from appliance.manager.rekey import Replacement, replace_key, revoke_replaced
from appliance.manager.service import ContractView, ManagerService, utcnow
from appliance.manager.setup import build_service, manager_settings, parse_resolve
from appliance.tls.context import client_context
from appliance.tls.peer import key_thumbprint


def register(subparsers: Any) -> None:
    parser = add_group(subparsers, "contract")
    sub = parser.add_subparsers(dest="contract_command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        return add_command(sub, name, help_text, config=True, json_output=True)

    pub = command("propose-publication", "publish one of our services in the Group's directory")
    pub.add_argument("--service", required=True, help="service name")
    pub.add_argument(
        "--protocol", default="PROTOCOL_TCP_HTTP_1.1", help="FSC protocol (default %(default)s)"
    )
    pub.add_argument("--days", type=int, default=365, help="validity (default %(default)s)")
    pub.set_defaults(func=_propose_publication)

    con = command("propose-connection", "ask another peer for a connection to its service")
    con.add_argument("--service-peer", required=True, help="OIN of the peer offering the service")
    con.add_argument("--service", required=True, help="service name")
    con.add_argument("--days", type=int, default=365, help="validity (default %(default)s)")
    con.add_argument("--properties", help="grant properties as a JSON object")
    con.set_defaults(func=_propose_connection)

    raw = command("propose", "propose a contract content read from a JSON file")
    raw.add_argument("--file", type=Path, required=True, help="contract content (JSON)")
    raw.set_defaults(func=_propose_file)

    for kind in SignatureType:
        sign = command(kind.value, f"{kind.value} a contract (signed in the HSM)")
        sign.add_argument("hash", help="contract content hash ($1$1$...)")
        sign.set_defaults(func=_sign, kind=kind)

    show = command("show", "show a contract, its signatures and state")
    show.add_argument("hash", help="contract content hash")
    show.set_defaults(func=_show)

    tok = command(
        "token",
        "get an access token from the service peer's Manager (mutual TLS; run with OPENSSL_CONF)",
    )
    tok.add_argument("--grant-hash", required=True, help="hash of the connection grant ($1$3$...)")
    tok.add_argument("--service-peer", required=True, help="OIN of the peer offering the service")
    tok.set_defaults(func=_token)

    rekey = command(
        "replace-key",
        "re-key: propose contracts for the outway's new key in place of each valid one",
    )
    rekey.add_argument(
        "--key-label", required=True, help="label of the new key in the token ([hsm] token)"
    )
    rekey.add_argument("--dry-run", action="store_true", help="only report, propose nothing")
    rekey.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to this long for the peers to sign (default: report at once)",
    )
    rekey.set_defaults(func=_replace_key)

    revoke = command(
        "revoke-replaced",
        "re-key: revoke the old contracts whose replacement for the live key is valid",
    )
    revoke.add_argument("--dry-run", action="store_true", help="only report, revoke nothing")
    revoke.set_defaults(func=_revoke_replaced)

    lst = command("list", "list contracts with their state")
    lst.add_argument(
        "--limit", type=int, default=100, help="at most this many, newest first (default 100)"
    )
    lst.set_defaults(func=_list)


def _service(args: argparse.Namespace) -> ManagerService:
    return build_service(load_config(args.config))


def _print(args: argparse.Namespace, view: ContractView) -> int:
    if args.json:
        shown = {
            "hash": view.content_hash,
            "state": view.state,
            "grant_hashes": list(view.grant_hashes),
            **view.as_api(),
        }
        print(json.dumps(shown, indent=2))
        return 0
    print(f"contract {view.content_hash}")
    print(f"  state:   {view.state}")
    for grant in view.content["grants"]:
        data = grant["data"]
        service = data.get("service", {})
        print(f"  grant:   {data['type']} service {service.get('peer_id')}/{service.get('name')}")
    for hash_ in view.grant_hashes:
        print(f"  grant hash: {hash_}")
    for kind, by_peer in view.signatures.items():
        for peer in by_peer:
            print(f"  {kind}: {peer}")
    return 0


def _propose(args: argparse.Namespace, content: dict[str, Any]) -> int:
    return _print(args, _service(args).propose(content))


def _propose_publication(args: argparse.Namespace) -> int:
    service = _service(args)
    settings = service.settings
    if not settings.directory_peer_id:
        raise ConfigurationError("[manager] directory_peer_id is needed to publish a service")
    content = publication_content(
        group_id=settings.group_id,
        directory_peer_id=settings.directory_peer_id,
        service_peer_id=service.peer_id,
        service_name=args.service,
        protocol=args.protocol,
        now=utcnow(),
        days=args.days,
    )
    return _print(args, service.propose(content))


def _propose_connection(args: argparse.Namespace) -> int:
    service = _service(args)
    properties = json.loads(args.properties) if args.properties else None
    content = connection_content(
        group_id=service.settings.group_id,
        service_peer_id=args.service_peer,
        service_name=args.service,
        outway_peer_id=service.peer_id,
        # Our outway connects with this appliance's certificate: bind the grant to its key.
        outway_public_key_thumbprint=service.identity.public_key_thumbprint,
        now=utcnow(),
        days=args.days,
        properties=properties,
    )
    return _print(args, service.propose(content))


def _propose_file(args: argparse.Namespace) -> int:
    manager_settings(load_config(args.config))
    return _propose(args, json.loads(args.file.read_text(encoding="utf-8")))


def _sign(args: argparse.Namespace) -> int:
    return _print(args, _service(args).sign(args.hash, args.kind))


def _show(args: argparse.Namespace) -> int:
    return _print(args, _service(args).get(args.hash))


def _token(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    settings = manager_settings(config)
    client = PeerClient(
        ssl_context=client_context(config.tls, config.hsm),
        own_address=settings.address,
        resolve=parse_resolve(settings.resolve) or None,
    )
    service = build_service(config, client=client)

    async def fetch() -> dict[str, Any]:
        assert service.client is not None
        try:
            address = await service.manager_address(args.service_peer)
            return await service.client.token(address, args.grant_hash, service.peer_id)
        finally:
            await service.client.close()

    result = asyncio.run(fetch())
    print(json.dumps(result, indent=2) if args.json else result.get("access_token", ""))
    return 0


def _report(args: argparse.Namespace, thumbprint: str, pairs: list[Replacement]) -> None:
    if args.json:
        print(json.dumps({"key": thumbprint, "contracts": [p.as_json() for p in pairs]}, indent=2))
        return
    print(f"outway key {thumbprint}: {len(pairs)} contract(s) for another key")
    for pair in pairs:
        action = " (proposed now)" if pair.proposed_now else ""
        action += " (revoked now)" if pair.revoked_now else ""
        print(f"  {pair.old_state:9s} {pair.old_hash}")
        print(f"    -> {pair.new_state or 'none':9s} {pair.new_hash or '-'}{action}")


def _replace_key(args: argparse.Namespace) -> int:
    """Exit 0: every replacement is valid; 1: some wait for the peers; 2: a peer refused one."""
    config = load_config(args.config)
    thumbprint = key_thumbprint(public_key(replace(config.hsm, key_label=args.key_label)))
    service = build_service(config)
    deadline = time.monotonic() + args.wait
    while True:
        # The running Manager stores the peers' signatures as they arrive; read it again.
        pairs = replace_key(service, thumbprint, dry_run=args.dry_run)
        waiting = [p for p in pairs if p.waiting]
        if not waiting or args.dry_run or time.monotonic() >= deadline:
            break
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
    _report(args, thumbprint, pairs)
    refused = [p for p in pairs if p.refused]
    if refused:
        print(
            "sluis: error: a peer did not take the replacement of "
            + ", ".join(f"{p.old_hash} ({p.new_state})" for p in refused)
            + "; the old contract stays valid: ask the peer, or propose anew by hand",
            file=sys.stderr,
        )
        return 2
    return 0 if all(p.done for p in pairs) else 1


def _revoke_replaced(args: argparse.Namespace) -> int:
    service = _service(args)
    thumbprint = service.identity.public_key_thumbprint
    _report(args, thumbprint, revoke_replaced(service, thumbprint, dry_run=args.dry_run))
    return 0


def _grant_summary(data: dict[str, Any]) -> dict[str, str | None]:
    """Type, peers and service of one grant: the hash alone does not say what a contract is."""
    service = data.get("service") or {}
    return {
        "type": str(data.get("type", "")).removeprefix("GRANT_TYPE_"),
        "service_peer_id": service.get("peer_id"),
        "service_name": service.get("name"),
        "outway_peer_id": (data.get("outway") or {}).get("peer_id"),
        "directory_peer_id": (data.get("directory") or {}).get("peer_id"),
    }


def _grant_text(grant: dict[str, str | None]) -> str:
    service = f"{grant['service_name']} of {grant['service_peer_id']}"
    if grant["outway_peer_id"]:
        return f"{grant['type']} {grant['outway_peer_id']} -> {service}"
    if grant["directory_peer_id"]:
        return f"{grant['type']} {service} in directory {grant['directory_peer_id']}"
    return f"{grant['type']} {service}"


def _list(args: argparse.Namespace) -> int:
    service = _service(args)
    views, _ = service.contracts(limit=args.limit)
    summaries = [[_grant_summary(g["data"]) for g in v.content["grants"]] for v in views]
    if args.json:
        print(
            json.dumps(
                [
                    {"hash": v.content_hash, "state": v.state, "grants": grants}
                    for v, grants in zip(views, summaries, strict=True)
                ],
                indent=2,
            )
        )
        return 0
    for view, grants in zip(views, summaries, strict=True):
        print(f"{view.state:9s} {view.content_hash}  {'; '.join(map(_grant_text, grants))}")
    return 0
