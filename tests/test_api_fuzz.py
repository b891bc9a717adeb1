"""Fuzzing the API from its own OpenAPI schema with schemathesis (4.x): every operation, with
generated valid and invalid parameters and bodies, must never answer 5xx, and every response
must match the schema (status codes, content types, bodies — errors included).

Bounded for CI: at most 30 generated examples per operation (plus schemathesis's deterministic
coverage cases), derandomized, no example database; the whole module runs in well under a
minute on the 2-core machine."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from dashboard_api.app import create_app
from dashboard_api.models import DeviceOut
from eqmon.domain import Quality, Reading, Severity
from tests.test_api_support import api_on_built_service, auth_headers

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


# The schema is loaded at import time from an app whose state is put in place by the fixture
# below (the OpenAPI document does not depend on it). (schemathesis.pytest.from_fixture would
# build it in a fixture, but its lazy path does not run under pytest 9.2.)
APP = create_app(None)  # type: ignore[arg-type]
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module")
def served_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with api_on_built_service(tmp_path_factory.mktemp("fuzz")) as api:
        # something to show: an online device with readings (one bad), an offline one with a
        # stale value, an open alert
        now = api.service.clock()
        api.service.health["fridge-1"].success(now)
        api.service.health["fridge-2"].success(now - 600)
        api.service.health["fridge-2"].unreachable(now - 300, "gateway: target device failed to respond")
        api.service.state.record([
            Reading("fridge-1", "temperature_c", 4.5, now, unit="°C"),
            Reading("fridge-1", "door_open", None, now, quality=Quality.BAD),
            Reading("fridge-2", "temperature_c", 5.0, now - 600, unit="°C"),
        ])  # fmt: skip
        api.service.engine.raise_system("fuzz-alert", Severity.WARNING, "WARNING eqmon: fuzzing", now)
        for d in api.get("/api/v1/devices").json()["items"]:
            DeviceOut.model_validate(d)
        APP.state.monitor = api.service.state
        try:
            yield
        finally:
            APP.state.monitor = None


@schema.parametrize()
@settings(
    max_examples=30,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_conforms_to_its_schema(case: Any, served_state: None) -> None:
    # as an admin (every scope: every operation is reached), with a token of its own (a generated
    # logout revokes only that one); the live-updates stream never ends: schemathesis checks the
    # events it sent within the timeout against the schema's itemSchema
    checks = CHECKS
    if case.path == "/readyz":  # its 503 is an answer (the fuzzed service is built, not started), in the schema
        checks = [c for c in CHECKS if c is not not_a_server_error]
    timeout = 0.2 if case.path == "/api/v1/events" else None
    case.call_and_validate(checks=checks, headers=auth_headers(APP.state.monitor, "admin"), timeout=timeout)


# Values random generation rarely reaches: past 64 bits, non-finite, past year 9999.
EXTREMES = ["18446744073709551616", "-9223372036854775809", "1" + "0" * 400, "1e400", "-1e400", "nan", "inf",
            "-inf", "1e308", "-1e308", "253402300800", "-0", "0x10", ""]  # fmt: skip


def test_numeric_query_parameters_at_their_extremes(served_state: None) -> None:
    """Every integer or number query parameter of every operation in the schema, at values
    past 64 bits, non-finite or out of range: a 4xx in the error shape, or a 200; never 5xx."""
    doc = APP.openapi()
    cases = []
    for path, ops in doc["paths"].items():
        if path == "/api/v1/events":  # a stream never ends (httpx's ASGI transport waits for the end):
            continue  # its parameters at their extremes are in tests/test_api_events.py
        url = path.replace("{device_id}", "fridge-1").replace("{alert_id}", "none").replace("{location_id}", "3")
        for method, op in ops.items():
            params = op.get("parameters", [])
            required = {p["name"]: "temperature_c" for p in params if p["in"] == "query" and p.get("required")}
            for p in params:
                types = {s.get("type") for s in p["schema"].get("anyOf", [p["schema"]])}
                if p["in"] == "query" and types & {"integer", "number"}:
                    cases += [(method.upper(), url, p["name"], v, {**required, p["name"]: v}) for v in EXTREMES]
    assert len(cases) >= 6 * len(EXTREMES)

    async def main() -> None:
        headers = auth_headers(APP.state.monitor, "admin")
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=APP), base_url="http://eqmon.test", headers=headers
        ) as client:
            for method, url, name, value, params in cases:
                r = await client.request(method, url, params=params)
                assert r.status_code < 500, (method, url, name, value, r.text)
                if r.status_code >= 400:
                    assert set(r.json()["error"]) == {"code", "message", "field"}
                    assert r.json()["error"]["field"] == f"query.{name}", r.text

    asyncio.run(main())
