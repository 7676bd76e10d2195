"""A session-object copy of the organisation key (what pkcs11-provider may keep in a process
whose TLS context uses the key) is no second key: the readiness check of such a worker found
"more than one object labelled sluis-organisation", and the key watch replaced the worker,
closing its connections (tests/lifecycle/test_revocation.py)."""

from __future__ import annotations

from collections.abc import Callable

from pkcs11 import Attribute, ObjectClass

from appliance.hsm.keys import find_private_key
from appliance.hsm.settings import HsmSettings
from appliance.hsm.token import open_session

MakeToken = Callable[..., HsmSettings]


def test_a_session_copy_of_the_key_is_not_a_duplicate(make_token: MakeToken) -> None:
    settings = make_token("session-copy")
    with open_session(settings) as session:
        key = find_private_key(session, settings)
        copy = key.copy({Attribute.TOKEN: False})
        both = list(
            session.get_objects(
                {Attribute.CLASS: ObjectClass.PRIVATE_KEY, Attribute.LABEL: settings.key_label}
            )
        )
        assert len(both) == 2  # the copy carries the label: a search by label alone sees two
        found = find_private_key(session, settings)
        assert found[Attribute.TOKEN] is True
        assert found.handle == key.handle
        copy.destroy()
