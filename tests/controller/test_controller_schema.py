"""The controller API against its own OpenAPI document (schemathesis): generated requests,
as an administrator with an API token, get documented answers and never a server error.

Same pattern as the Manager's conformance test (tests/manager/api/test_api_schema.py): the
real app in-process, on a Manager service holding a valid publication and a pending
connection request.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import falcon.asgi
import pytest
import schemathesis
from controllertest import Env
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    CheckContext,
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import appliance.controller
from appliance.controller.app import build_app
from appliance.controller.roles import Role

SPEC = Path(appliance.controller.__file__).with_name("openapi.yaml")
schema = schemathesis.openapi.from_path(SPEC, config=schemathesis.Config())
BASE_URL = "http://controller.test/api/v1"
EXAMPLES = 5

Case = schemathesis.Case
CheckFunction = Callable[[CheckContext, schemathesis.Response, Case], bool | None]
CHECKS: tuple[CheckFunction, ...] = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
)


class Caller:
    """An administrator's API token; made anew when a generated request revoked it."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.token = env.tokens[Role.ADMINISTRATOR]

    def headers(self) -> dict[str, str]:
        if self.env.controller.auth.bearer(self.token) is None:
            self.token, _ = self.env.controller.auth.create_token("schema", Role.ADMINISTRATOR, "t")
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
def app(env: Env) -> falcon.asgi.App[Any, Any]:
    return build_app(env.controller)


@pytest.fixture(scope="module")
def caller(env: Env) -> Caller:
    return Caller(env)


def test_schema_base_path() -> None:
    assert schema.base_path.rstrip("/") == "/api/v1"


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_every_operation_conforms(
    case: Case, app: falcon.asgi.App[Any, Any], caller: Caller
) -> None:
    headers = caller.headers()
    response = case.call(app=app, base_url=BASE_URL, headers=headers)
    case.validate_response(response, checks=list(CHECKS), headers=headers)
