"""The state the listings filter and count on (stored columns, the clock compared in SQL)
follows every way a contract's state changes, and the count waiting for our approval is
exact however many contracts there are (it once looked at the newest 500 only)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path

from apitest import address_of, sign
from bulk import add_copies, copy_tables
from contracttest import NOW, OIN_A, Group
from controllertest import SERVICE, Env, controller_env, identity
from cryptography import x509

from appliance.controller.listing import WINDOW, ContractListing, Filter
from appliance.controller.roles import Role
from appliance.manager.contracts.signatures import SignatureType
from appliance.manager.storage import ManagerStore


def _listed(env: Env, where: Filter, now: datetime = NOW) -> set[str]:
    page = env.controller.manager.listing.page(where, now, limit=1000)
    return {row.content_hash for row in page.rows}


def _overview_count(env: Env) -> int:
    body = env.client.simulate_get("/api/v1/overview", **env.as_role(Role.AUDITOR, csrf=False)).json
    return int(body["pending_approvals"])


def _revoked_by_a(env: Env, content_hash: str) -> None:
    content = env.service.get(content_hash).content
    asyncio.run(
        env.service.receive_signature(
            content_hash,
            SignatureType.REVOKE,
            content,
            sign(content, env.group[OIN_A], "revoke"),
            identity(env.group, OIN_A),
            address_of(OIN_A),
        )
    )


def test_accept_reject_revoke_and_expiry_change_what_the_filters_find(
    group: Group, crls: list[x509.CertificateRevocationList], tmp_path: Path
) -> None:
    with controller_env(group, crls, tmp_path) as env:
        manager = env.controller.manager
        env.published(SERVICE)
        accepted, rejected = env.connection_from_a(), env.connection_from_a()
        both = {accepted, rejected}
        assert _listed(env, Filter(pending=True)) == both
        assert _listed(env, Filter(state="proposed")) == both
        assert both <= _listed(env, Filter(peer_id=OIN_A))
        assert _overview_count(env) == 2

        manager.sign(accepted, SignatureType.ACCEPT)
        manager.sign(rejected, SignatureType.REJECT)
        assert _listed(env, Filter(pending=True)) == set()
        assert _overview_count(env) == 0
        assert accepted in _listed(env, Filter(state="valid"))
        assert _listed(env, Filter(state="rejected")) == {rejected}

        manager.sign(accepted, SignatureType.REVOKE)
        assert _listed(env, Filter(state="revoked")) == {accepted}
        assert accepted not in _listed(env, Filter(state="valid"))
        # Each listed state is the Manager's own (contract_state over the signatures).
        for content_hash in both:
            assert manager.get(content_hash).state in ("revoked", "rejected")

        # By the clock alone: a proposal that nobody answers expires after its 30 days.
        waiting = env.connection_from_a()
        later = NOW + timedelta(days=31)
        assert _listed(env, Filter(pending=True)) == {waiting}
        assert _listed(env, Filter(pending=True), later) == set()
        assert waiting in _listed(env, Filter(state="expired"), later)
        counts = env.service.store.contract_counts_by_state(later)
        assert counts["expired"] == 2  # the publication (30 days) and the unanswered one
        assert (counts["revoked"], counts["rejected"], counts["proposed"]) == (1, 1, 0)
        assert env.controller.manager.listing.count(Filter(pending=True), later) == 0

        # A withdraws its proposal before we answer: it no longer waits for us.
        assert _overview_count(env) == 1
        _revoked_by_a(env, waiting)
        assert _listed(env, Filter(pending=True)) == set()
        assert _overview_count(env) == 0
        assert _listed(env, Filter(state="revoked")) == {accepted, waiting}


def test_the_count_waiting_for_approval_is_exact_above_the_window(
    group: Group,
    crls: list[x509.CertificateRevocationList],
    tmp_path: Path,
    fresh_postgres_url: str,
) -> None:
    copies = WINDOW + 100
    with controller_env(group, crls, tmp_path) as env:
        env.published(SERVICE)
        template = env.connection_from_a()
        env.controller.manager.sign(template, SignatureType.ACCEPT)
        # Every other copy waits for B; the newest ones are not, so a look at the newest
        # 500 only would count about half of them.
        add_copies(env, template, 0, copies, pending_every=2)
        expected = copies // 2
        assert _overview_count(env) == expected
        page = env.client.simulate_get("/", **env.as_role(Role.AUDITOR, csrf=False))
        assert f"{expected} contracts waiting for your approval" in page.text
        here = env.controller.manager.listing
        assert here.count(Filter(pending=True), NOW) == expected
        counts = env.service.store.contract_counts_by_state(NOW)
        assert counts["proposed"] == expected
        assert counts["valid"] == copies - expected + 2  # and the template and publication

        with ManagerStore.open(fresh_postgres_url) as target:
            copy_tables(env.service.store.engine, target.engine)
            there = ContractListing(target.engine, here.own_peer_id)
            assert there.count(Filter(pending=True), NOW) == expected
            assert target.contract_counts_by_state(NOW) == counts
