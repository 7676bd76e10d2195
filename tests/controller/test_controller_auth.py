"""Password hashing, lockout, sessions, CSRF tokens, API tokens and the append-only audit log."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from appliance.config import ControllerSettings
from appliance.controller import passwords
from appliance.controller.auth import (
    SOURCE_ATTEMPTS,
    Authenticator,
    LoginFailed,
    csrf_matches,
    csrf_token_for,
)
from appliance.controller.database import current_revision
from appliance.controller.oidc import Identity
from appliance.controller.roles import Role
from appliance.controller.store import ControllerStore, StoreError

PASSWORD = "a long enough password"
HERE, THERE = "192.0.2.1", "192.0.2.2"  # client addresses


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def auth(tmp_path: Path, clock: Clock) -> Iterator[Authenticator]:
    settings = ControllerSettings(database=f"sqlite:///{tmp_path / 'c.db'}")
    store = ControllerStore.open(settings.database)
    try:
        yield Authenticator(store, settings, clock)
    finally:
        store.close()


# -- passwords --------------------------------------------------------------------------------


def test_password_hash_is_scrypt_with_a_salt_of_its_own() -> None:
    first, second = passwords.hash_password(PASSWORD), passwords.hash_password(PASSWORD)
    scheme, n, r, p, salt, key = first.split("$")
    assert len(key) == 43  # 32 bytes, base64url
    assert (scheme, int(n), int(r), int(p)) == ("scrypt", 2**14, 8, 1)
    assert first != second  # a random salt per hash
    assert salt != second.split("$")[4]
    assert PASSWORD not in first
    assert passwords.verify_password(PASSWORD, first)
    assert not passwords.verify_password(PASSWORD + "!", first)
    assert not passwords.verify_password(PASSWORD, "md5$whatever")


def test_keys_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = passwords.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(passwords.hmac, "compare_digest", spy)
    assert passwords.verify_password(PASSWORD, passwords.hash_password(PASSWORD))
    assert len(calls) == 1


def test_weaker_hashes_are_replaced_at_the_next_login(auth: Authenticator) -> None:
    weak = passwords.hash_password(PASSWORD, passwords.Parameters(n=2**4, r=8, p=1))
    assert passwords.needs_rehash(weak)
    assert not passwords.needs_rehash(passwords.hash_password(PASSWORD))
    user = auth.store.add_user("old", Role.AUDITOR, weak, auth.clock())
    auth.check_password("old", PASSWORD, HERE)
    stored = auth.store.get_user("old")
    assert stored is not None
    assert stored.password_hash != weak
    assert passwords.verify_password(PASSWORD, stored.password_hash)
    assert not passwords.needs_rehash(stored.password_hash, passwords.Parameters(n=2**10))
    assert user.id == stored.id


def test_password_policy() -> None:
    with pytest.raises(ValueError, match="at least 12"):
        passwords.check_password_policy("short")
    with pytest.raises(ValueError, match="at most"):
        passwords.check_password_policy("x" * 2000)
    assert len(passwords.generate_password()) >= 24


# -- lockout ----------------------------------------------------------------------------------


def test_five_failures_from_an_address_lock_it_out_of_the_account_for_fifteen_minutes(
    auth: Authenticator, clock: Clock
) -> None:
    auth.create_user("alice", Role.SERVICE_OWNER, PASSWORD)
    for attempt in range(4):
        with pytest.raises(LoginFailed, match=r"wrong password$"):
            auth.check_password("alice", f"guess {attempt}", HERE)
        clock.advance(seconds=1)
    with pytest.raises(LoginFailed, match="locked for this address for 15 minutes"):
        auth.check_password("alice", "guess 5", HERE)
    # Locked for that address: even the right password is refused ...
    with pytest.raises(LoginFailed, match="account locked for this address"):
        auth.check_password("alice", PASSWORD, HERE)
    locked = auth.store.get_user("alice")
    assert locked is not None
    assert locked.locked(clock.now)  # the Users page shows it, with Unlock
    # ... but the owner at another address logs in: a stranger cannot lock anyone else out.
    assert auth.check_password("alice", PASSWORD, THERE).username == "alice"
    # Refused attempts do not lengthen the lock: it ends 15 minutes after the first failure.
    clock.advance(minutes=14, seconds=55)
    with pytest.raises(LoginFailed, match="account locked for this address"):
        auth.check_password("alice", PASSWORD, HERE)
    clock.advance(seconds=2)
    assert auth.check_password("alice", PASSWORD, HERE).username == "alice"
    user = auth.store.get_user("alice")
    assert user is not None
    assert user.failed_attempts == 0
    assert user.locked_until is None


def test_unlocking_lifts_every_address_lock(auth: Authenticator) -> None:
    auth.create_user("alma", Role.AUDITOR, PASSWORD)
    for _ in range(5):
        with pytest.raises(LoginFailed):
            auth.check_password("alma", "wrong", HERE)
    with pytest.raises(LoginFailed, match="locked for this address"):
        auth.check_password("alma", PASSWORD, HERE)
    auth.store.unlock_user("alma")
    assert auth.check_password("alma", PASSWORD, HERE).username == "alma"


def test_a_password_spray_from_one_address_is_blocked_and_audited(
    auth: Authenticator, clock: Clock
) -> None:
    """20 failed logins from one address within 15 minutes, over many accounts (known or
    not), block the address, also for a right password; other addresses are not hindered."""
    auth.create_user("sprayed", Role.AUDITOR, PASSWORD)
    for n in range(SOURCE_ATTEMPTS - 1):
        with pytest.raises(LoginFailed, match=r"(unknown user|wrong password)$"):
            auth.check_password("sprayed" if n == 0 else f"user{n}", "Winter2026!", HERE)
    with pytest.raises(LoginFailed, match="address blocked"):
        auth.check_password("user99", "Winter2026!", HERE)
    tripped = auth.store.query_audit(action="login.throttle")[0]
    assert [(e.outcome, e.peer_address) for e in tripped] == [("denied", HERE)]
    assert tripped[0].detail is not None
    assert f"{SOURCE_ATTEMPTS} failed logins from this address" in tripped[0].detail
    with pytest.raises(LoginFailed, match="address blocked"):
        auth.check_password("sprayed", PASSWORD, HERE)
    assert auth.check_password("sprayed", PASSWORD, THERE).username == "sprayed"
    clock.advance(minutes=15, seconds=1)
    assert auth.check_password("sprayed", PASSWORD, HERE).username == "sprayed"


def test_a_success_resets_the_count(auth: Authenticator) -> None:
    auth.create_user("bob", Role.AUDITOR, PASSWORD)
    for _ in range(4):
        with pytest.raises(LoginFailed):
            auth.check_password("bob", "wrong", HERE)
    auth.check_password("bob", PASSWORD, HERE)
    for _ in range(4):
        with pytest.raises(LoginFailed, match=r"wrong password$"):
            auth.check_password("bob", "wrong", HERE)


def test_unknown_users_and_disabled_accounts(auth: Authenticator) -> None:
    with pytest.raises(LoginFailed, match="unknown user"):
        auth.check_password("nobody", PASSWORD, HERE)
    auth.create_user("carol", Role.AUDITOR, PASSWORD)
    auth.store.set_disabled("carol", True)
    with pytest.raises(LoginFailed, match="disabled"):
        auth.check_password("carol", PASSWORD, HERE)


def test_failed_logins_are_audited_without_the_password(auth: Authenticator) -> None:
    auth.create_user("dave", Role.AUDITOR, PASSWORD)
    with pytest.raises(LoginFailed):
        asyncio.run(auth.login("dave", "not " + PASSWORD, "10.0.0.7"))
    with pytest.raises(LoginFailed):
        asyncio.run(auth.login("mallory", PASSWORD, "10.0.0.8"))
    entries, _ = auth.store.query_audit(action="login")
    assert [(e.actor, e.outcome, e.peer_address, e.detail) for e in entries] == [
        ("mallory", "failure", "10.0.0.8", "unknown user"),
        ("dave", "failure", "10.0.0.7", "wrong password"),
    ]
    with auth.store.engine.connect() as conn:
        dump = "".join(str(row) for row in conn.execute(sa.text("SELECT * FROM controller_audit")))
    assert PASSWORD not in dump


# -- sessions ---------------------------------------------------------------------------------


def test_sessions_end_when_idle_or_too_old(auth: Authenticator, clock: Clock) -> None:
    user = auth.create_user("erin", Role.AUDITOR, PASSWORD)
    session = auth.open_session(user, "10.0.0.1")
    assert auth.session(session.session_id) is not None
    clock.advance(minutes=29)
    assert auth.session(session.session_id) is not None  # activity keeps it alive
    clock.advance(minutes=29)
    assert auth.session(session.session_id) is not None
    clock.advance(minutes=30)  # idle for 30 minutes
    assert auth.session(session.session_id) is None
    # Absolute: 8 hours after login, however active.
    session = auth.open_session(user, "10.0.0.1")
    for _ in range(16):
        clock.advance(minutes=29, seconds=59)
        assert auth.session(session.session_id) is not None
    clock.advance(minutes=1)
    assert auth.session(session.session_id) is None


def test_session_ids_are_random_and_stored_hashed(auth: Authenticator) -> None:
    user = auth.create_user("frank", Role.AUDITOR, PASSWORD)
    first, second = auth.open_session(user, "-"), auth.open_session(user, "-")
    assert first.session_id != second.session_id
    assert len(first.session_id) >= 43  # 256 bits
    with auth.store.engine.connect() as conn:
        stored = {
            row[0] for row in conn.execute(sa.text("SELECT id_hash FROM controller_sessions"))
        }
    assert first.session_id not in stored
    assert hashlib.sha256(first.session_id.encode()).hexdigest() in stored
    auth.end_session(first.session_id)
    assert auth.session(first.session_id) is None
    assert auth.session(second.session_id) is not None
    assert auth.session("forged") is None


def test_a_new_password_ends_every_session(auth: Authenticator) -> None:
    user = auth.create_user("grace", Role.AUDITOR, PASSWORD)
    session = auth.open_session(user, "-")
    auth.set_password("grace", "another long password")
    assert auth.session(session.session_id) is None


# -- CSRF -------------------------------------------------------------------------------------


def test_csrf_tokens_belong_to_their_session(auth: Authenticator) -> None:
    user = auth.create_user("heidi", Role.AUDITOR, PASSWORD)
    one, two = auth.open_session(user, "-"), auth.open_session(user, "-")
    token = one.principal.csrf_token
    assert token == csrf_token_for(one.session_id)
    assert token != two.principal.csrf_token
    assert one.principal.csrf_ok(token)
    assert not two.principal.csrf_ok(token)
    assert not one.principal.csrf_ok(None)
    assert not one.principal.csrf_ok("")
    assert not csrf_matches(one.session_id, token[:-1] + ("A" if token[-1] != "A" else "B"))


# -- API tokens -------------------------------------------------------------------------------


def test_api_tokens_are_shown_once_stored_hashed_and_revocable(
    auth: Authenticator, clock: Clock
) -> None:
    secret, record = auth.create_token("deploy", Role.SERVICE_OWNER, "admin", days=1)
    assert secret.startswith("sluis_ctl_")
    principal = auth.bearer(secret)
    assert principal is not None
    assert (principal.actor, principal.role, principal.kind) == (
        "token:deploy",
        Role.SERVICE_OWNER,
        "token",
    )
    assert principal.csrf_ok(None)  # a bearer token is no ambient credential
    with auth.store.engine.connect() as conn:
        dump = "".join(str(r) for r in conn.execute(sa.text("SELECT * FROM controller_api_tokens")))
    assert secret not in dump
    assert auth.bearer(secret + "x") is None
    clock.advance(days=1)
    assert auth.bearer(secret) is None  # expired
    other, record = auth.create_token("ci", Role.AUDITOR, "admin")
    assert auth.bearer(other) is not None
    auth.store.revoke_token(record.id, clock())
    assert auth.bearer(other) is None
    with pytest.raises(StoreError):
        auth.store.revoke_token(9999, clock())


# -- the audit log is append-only ---------------------------------------------------------


def _audit_once(store: ControllerStore) -> None:
    store.append_audit(
        at=datetime.now(UTC),
        actor="x",
        role=None,
        action="test",
        outcome="success",
        peer_address="-",
    )


def _assert_append_only(store: ControllerStore) -> None:
    _audit_once(store)
    for statement in (
        "UPDATE controller_audit SET outcome = 'failure'",
        "DELETE FROM controller_audit",
    ):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), store.engine.begin() as conn:
            conn.execute(sa.text(statement))
    assert store.audit_count() == 1


def test_the_audit_log_refuses_update_and_delete_on_sqlite(tmp_path: Path) -> None:
    store = ControllerStore.open(f"sqlite:///{tmp_path / 'audit.db'}")
    try:
        assert current_revision(store.engine) == "0005"
        _assert_append_only(store)
    finally:
        store.close()


def test_the_migrated_database_matches_the_tables(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from appliance.controller.database import VERSION_TABLE
    from appliance.controller.schema import metadata

    store = ControllerStore.open(f"sqlite:///{tmp_path / 'schema.db'}")
    try:
        with store.engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": VERSION_TABLE, "compare_type": True}
            )
            assert list(compare_metadata(context, metadata)) == []
    finally:
        store.close()


def test_the_audit_log_refuses_update_delete_and_truncate_on_postgresql(
    fresh_postgres_url: str,
) -> None:
    store = ControllerStore.open(fresh_postgres_url)
    try:
        _assert_append_only(store)
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), store.engine.begin() as conn:
            conn.execute(sa.text("TRUNCATE controller_audit"))
        # The rest of the controller works on PostgreSQL as on SQLite.
        auth = Authenticator(store, ControllerSettings(database=fresh_postgres_url))
        user = auth.create_user("ivan", Role.AUDITOR, PASSWORD)
        for _ in range(5):
            with pytest.raises(LoginFailed):
                auth.check_password("ivan", "wrong", HERE)
        locked = auth.store.get_user("ivan")
        assert locked is not None
        assert locked.locked(datetime.now(UTC))
        assert auth.session(auth.open_session(user, "-").session_id) is not None
    finally:
        store.close()


def test_the_store_has_no_way_to_change_the_audit_log() -> None:
    public = {name for name in dir(ControllerStore) if "audit" in name}
    assert public == {"append_audit", "query_audit", "audit_count"}


# -- accounts made by OpenID Connect logins ----------------------------------------------------


def _identity(sub: str, username: str, role: Role) -> Identity:
    return Identity(f"https://idp.example {sub}", username, role, "some-group")


def test_an_oidc_login_makes_the_account_and_gives_it_the_providers_role(
    auth: Authenticator,
) -> None:
    first = asyncio.run(auth.login_oidc(_identity("1", "olga", Role.AUDITOR), "10.0.0.1"))
    assert first.principal.role == Role.AUDITOR
    assert auth.session(first.session_id) == first.principal
    again = asyncio.run(auth.login_oidc(_identity("1", "olga", Role.SERVICE_OWNER), "10.0.0.1"))
    assert again.principal.role == Role.SERVICE_OWNER
    users = auth.store.list_users()
    assert [(u.username, u.role, u.oidc_subject) for u in users] == [
        ("olga", Role.SERVICE_OWNER, "https://idp.example 1")
    ]
    assert users[0].as_api(auth.clock())["login"] == "oidc"
    # No password logs in to it, and none can be set.
    with pytest.raises(LoginFailed, match="OpenID Connect"):
        auth.check_password("olga", "", HERE)
    with pytest.raises(StoreError, match="has no password"):
        auth.set_password("olga", PASSWORD)


def test_an_oidc_login_never_takes_over_another_account(auth: Authenticator) -> None:
    def counted() -> tuple[float, float]:  # the controller's /metrics (docs/monitoring.md)
        from prometheus_client import REGISTRY

        logins = "sluis_controller_logins_total", {"method": "oidc"}
        failures = "sluis_controller_login_failures_total", {"reason": "oidc"}
        return (REGISTRY.get_sample_value(*logins) or 0, REGISTRY.get_sample_value(*failures) or 0)

    before = counted()
    auth.create_user("alice", Role.ADMINISTRATOR, PASSWORD)
    with pytest.raises(LoginFailed, match="'alice' is a local account"):
        asyncio.run(auth.login_oidc(_identity("2", "alice", Role.AUDITOR), "-"))
    asyncio.run(auth.login_oidc(_identity("3", "bob", Role.AUDITOR), "-"))
    with pytest.raises(LoginFailed, match="'bob' is another person's"):
        asyncio.run(auth.login_oidc(_identity("4", "bob", Role.AUDITOR), "-"))
    with pytest.raises(LoginFailed, match="not a valid account name"):
        asyncio.run(auth.login_oidc(_identity("5", "bob smith", Role.AUDITOR), "-"))
    entries, _ = auth.store.query_audit(action="login", outcome="failure")
    assert [e.detail for e in entries][-1] == "oidc: the username 'alice' is a local account here"
    after = counted()
    assert (after[0] - before[0], after[1] - before[1]) == (1, 3)


def test_a_disabled_oidc_account_cannot_log_in(auth: Authenticator) -> None:
    session = asyncio.run(auth.login_oidc(_identity("6", "carol", Role.AUDITOR), "-"))
    auth.store.set_disabled("carol", True)
    assert auth.session(session.session_id) is None
    with pytest.raises(LoginFailed, match="account disabled"):
        asyncio.run(auth.login_oidc(_identity("6", "carol", Role.ADMINISTRATOR), "-"))
    user = auth.store.get_user("carol")
    assert user is not None
    assert user.role == Role.AUDITOR  # a disabled account is not given the new role


def test_a_login_begun_at_the_provider_is_used_once(auth: Authenticator, clock: Clock) -> None:
    store = auth.store
    store.add_oidc_login("a" * 64, "/contracts", clock.now, clock.now + timedelta(minutes=10))
    store.add_oidc_login("b" * 64, "/", clock.now, clock.now + timedelta(minutes=10))
    assert store.take_oidc_login("a" * 64, clock.now) == "/contracts"
    assert store.take_oidc_login("a" * 64, clock.now) is None
    clock.advance(minutes=11)
    assert store.take_oidc_login("b" * 64, clock.now) is None  # expired
