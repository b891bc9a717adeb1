"""The API's errors: bounded query parameters, finite timestamps, bodies it cannot echo, and
one JSON error shape ({"error": {"code", "message", "field"}}) for every status."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_api_support import InProcessApi, api_on_built_service

JSON = {"content-type": "application/json"}
MAX_ERROR_BYTES = 1024  # an error body never grows with the input


@pytest.fixture
def api(tmp_path: Path) -> Iterator[InProcessApi]:
    with api_on_built_service(tmp_path) as a:
        yield a


def error_of(r: httpx.Response, status: int, code: str, field: str | None = None) -> dict[str, object]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert len(r.content) <= MAX_ERROR_BYTES, r.content[:200]
    r.content.decode("utf-8")  # valid text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "field"}, body
    err: dict[str, object] = body["error"]
    assert err["code"] == code, err
    assert err["field"] == field, err
    assert isinstance(err["message"], str) and err["message"]
    return err


@pytest.mark.parametrize(
    ("url", "param"),
    [
        ("/api/v1/alerts", "limit"),
        ("/api/v1/telemetry/dead-letters", "limit"),
        ("/api/v1/mqtt/dead-letters", "limit"),
        ("/api/v1/devices/fridge-1/history?metric=temperature_c", "limit"),
    ],
)
def test_integer_query_parameters_are_bounded(api: InProcessApi, url: str, param: str) -> None:
    sep = "&" if "?" in url else "?"
    for bad in (str(2**64), str(2**63), "9" * 40, "0", "-1", "1e3", "nan", "x" * 5000):
        err = error_of(api.get(f"{url}{sep}{param}={bad}"), 422, "validation_error", f"query.{param}")
        assert "x" * 50 not in str(err["message"])
    assert api.get(f"{url}{sep}{param}=1").status_code == 200
    assert api.get("/api/v1/alerts?limit=1000").status_code == 200
    error_of(api.get("/api/v1/alerts?limit=1001"), 422, "validation_error", "query.limit")


@pytest.mark.parametrize("route", ["history", "history/aggregate"])
@pytest.mark.parametrize("param", ["since", "until"])
def test_timestamps_must_be_finite_and_in_range(api: InProcessApi, route: str, param: str) -> None:
    url = f"/api/v1/devices/fridge-1/{route}"
    for bad in ("nan", "NaN", "inf", "-inf", "Infinity", "1e400", "-1e400", "1e308", "-1e308", "-1", "253402300800"):
        err = error_of(
            api.get(url, params={"metric": "temperature_c", param: bad}), 422, "validation_error", f"query.{param}"
        )
        assert f"query.{param}" in str(err["message"])
    for good in ("0", "1700000000.5", "253402300799"):
        r = api.get(url, params={"metric": "temperature_c", param: good})
        assert r.status_code == 200, r.text
        assert r.json()["points"] == []


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        (b'{"note": "\\ud800"}', 422, "validation_error", "body.note"),  # a lone surrogate, JSON-escaped
        (b'{"note": "ok\\udfff"}', 422, "validation_error", "body.note"),
        (b'{"note": "\xed\xa0\x80"}', 422, "validation_error", "body.note"),  # a surrogate, UTF-8-encoded
        (b'{"note": "\xff\xfe"}', 400, "malformed_json", "body"),  # not UTF-8
        (b"\xff\xfe\x00\x01", 400, "malformed_json", "body"),
        (b'{"note": ', 400, "malformed_json", "body"),
        (b'{"note": "' + "\u00e9\ud800".encode("utf-8", "surrogatepass") * 100 + b'"}', 422, "validation_error", "body.note"),
        (b'{"note": 12}', 422, "validation_error", "body.note"),
        (b'{"note": "' + b"x" * 60000 + b'"}', 422, "validation_error", "body.note"),  # longer than 500
        (b"[]", 422, "validation_error", "body"),
        (b"", 422, "validation_error", "body"),
    ],
)
def test_ack_bodies_that_cannot_be_echoed(
    api: InProcessApi, body: bytes, status: int, code: str, field: str
) -> None:
    r = api.post("/api/v1/alerts/some-alert/ack", content=body, headers=JSON)
    err = error_of(r, status, code, field)
    assert "xxxxxxxxxx" not in str(err["message"])


def test_body_size_is_limited(api: InProcessApi) -> None:
    big = b'{"note": "' + b"x" * 70_000 + b'"}'
    error_of(api.post("/api/v1/alerts/a/ack", content=big, headers=JSON), 413, "payload_too_large", "body")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"note": "'
        for _ in range(100):
            yield b"x" * 1000
        yield b'"}'

    err = error_of(api.post("/api/v1/alerts/a/ack", content=chunks(), headers=JSON), 413, "payload_too_large", "body")
    assert err["message"] == "request body larger than 65536 bytes"


def test_not_found_and_method_not_allowed(api: InProcessApi) -> None:
    err = error_of(api.get("/api/v1/devices/" + "\u00e9" * 200), 404, "not_found")
    assert len(str(err["message"])) < 200
    err = error_of(api.get("/api/v1/devices/" + "\u00e9" * 5000), 422, "validation_error", "path.device_id")
    assert "\u00e9" * 10 not in str(err["message"])
    error_of(api.get("/api/v1/devices/nope/history", params={"metric": "t"}), 404, "not_found")
    error_of(api.post("/api/v1/alerts/nope/ack", json={}), 404, "not_found")
    error_of(api.get("/api/v1/nothing-here"), 404, "not_found")
    r = api.request("DELETE", "/api/v1/alerts")
    error_of(r, 405, "method_not_allowed")
    assert "GET" in r.headers["allow"]


def test_internal_errors_are_generic_and_logged(
    api: InProcessApi, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> list[object]:
        raise RuntimeError("secret detail: /var/lib/eqmon")

    monkeypatch.setattr(api.service.engine, "active", broken)
    with caplog.at_level(logging.ERROR, logger="eqmon.api"):
        for url in ("/api/v1/devices", "/api/v1/alerts", "/healthz"):
            err = error_of(api.get(url), 500, "internal_error")
            assert "secret" not in str(err["message"])
    assert "secret detail" in caplog.text  # the details are in the log


def test_validation_error_names_the_field_and_never_echoes_input(api: InProcessApi) -> None:
    err = error_of(
        api.get("/api/v1/devices/fridge-1/history/aggregate", params={"metric": "t", "window": "<script>" * 50}),
        422, "validation_error", "query.window",
    )
    assert "<script>" not in str(err["message"])
    error_of(api.get("/api/v1/devices/fridge-1/history"), 422, "validation_error", "query.metric")
