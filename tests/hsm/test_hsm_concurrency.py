"""Many processes logging in to one SoftHSM token at once must not corrupt it.

SoftHSM rewrites ``token.object`` on every C_Login; concurrent logins from several processes
once truncated it to zero bytes. The login lock serialises them. Each worker logs in afresh
for every one of its signatures (it logs out after each), so 8 x 50 logins race here.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
from collections.abc import Callable
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from appliance.hsm.jws import sign_compact, verify_compact
from appliance.hsm.keys import list_objects
from appliance.hsm.settings import HsmSettings
from appliance.hsm.signer import Pkcs11Signer, der_signature
from appliance.hsm.token import logout

PROCESSES = 8
ROUNDS = 50


def _login_and_sign(
    settings: HsmSettings, barrier: Barrier, results: Any, rounds: int
) -> None:  # pragma: no cover - runs in a child process
    try:
        barrier.wait(timeout=120)
        for i in range(rounds):
            with Pkcs11Signer(settings) as signer:  # C_Login, under the login lock
                payload = f"{os.getpid()}:{i}".encode()
                verify_compact(
                    sign_compact(signer, payload, {}), signer.public_key(), algorithms=["ES256"]
                )
            logout(settings)  # so that the next round logs in again
        results.put(("ok", os.getpid(), rounds))
    except BaseException as exc:
        results.put(("error", os.getpid(), repr(exc)))


def _check_in_fresh_process(settings: HsmSettings, results: Any) -> None:  # pragma: no cover
    try:
        with Pkcs11Signer(settings) as signer:
            public = signer.public_key()
            assert isinstance(public, ec.EllipticCurvePublicKey)
            public.verify(der_signature(signer, b"after"), b"after", ec.ECDSA(hashes.SHA256()))
        results.put(("ok", os.getpid(), 1))
    except BaseException as exc:
        results.put(("error", os.getpid(), repr(exc)))


def _collect(results: Any, count: int) -> list[tuple[str, int, Any]]:
    collected = []
    for _ in range(count):
        try:
            collected.append(results.get(timeout=240))
        except queue.Empty:
            break
    return collected


def test_concurrent_logins_do_not_corrupt_the_token(
    make_token: Callable[..., HsmSettings], softhsm_env: Any
) -> None:
    settings = make_token("concurrent-logins")
    before = {p: p.stat().st_size for p in Path(softhsm_env.token_dir).glob("*/token.object")}
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    workers = [
        ctx.Process(target=_login_and_sign, args=(settings, barrier, results, ROUNDS))
        for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    outcome = _collect(results, PROCESSES)
    for worker in workers:
        worker.join(timeout=60)
    assert [o for o in outcome if o[0] != "ok"] == []
    assert len(outcome) == PROCESSES
    assert all(worker.exitcode == 0 for worker in workers)

    token_objects = list(Path(softhsm_env.token_dir).glob("*/token.object"))
    assert token_objects
    assert set(before) <= set(token_objects)
    for path in token_objects:
        assert path.stat().st_size > 0, f"{path} was truncated"

    # Still works: in a brand-new process and in this one.
    checker = ctx.Process(target=_check_in_fresh_process, args=(settings, results))
    checker.start()
    [(state, _, detail)] = _collect(results, 1)
    checker.join(timeout=60)
    assert state == "ok", detail
    with Pkcs11Signer(settings) as signer:
        verify_compact(sign_compact(signer, b"x", {}), signer.public_key(), algorithms=["ES256"])
    assert {o.kind for o in list_objects(settings)} == {"private-key", "public-key"}


def _sign_in_forked_child(settings: HsmSettings, results: Any) -> None:  # pragma: no cover
    try:
        with Pkcs11Signer(settings) as signer:
            token = sign_compact(signer, b"child", {})
            verify_compact(token, signer.public_key(), algorithms=["ES256"])
        results.put(("ok", os.getpid(), 1))
    except BaseException as exc:
        results.put(("error", os.getpid(), repr(exc)))


def test_forked_child_reinitialises_the_module(make_token: Callable[..., HsmSettings]) -> None:
    # gunicorn forks workers from a master that may have used the token already.
    settings = make_token("forked")
    with Pkcs11Signer(settings) as parent_signer:
        parent_signer.sign(b"parent, before")
        ctx = multiprocessing.get_context("fork")
        results = ctx.Queue()
        child = ctx.Process(target=_sign_in_forked_child, args=(settings, results))
        child.start()
        [(state, _, detail)] = _collect(results, 1)
        child.join(timeout=60)
        assert state == "ok", detail
        # The child did not log the parent out.
        verify_compact(
            sign_compact(parent_signer, b"parent, after", {}),
            parent_signer.public_key(),
            algorithms=["ES256"],
        )
