"""The inventory API (dashboard_api/routers/inventory.py; docs/api.md, "Inventory") on the built
service of the example site (its `inventory:` section) and its state database, SQLite and
PostgreSQL (``state_db``) wherever the database is touched: who may call what, the reads and
their filters and pages, idempotent stock writes (also concurrent), 422s naming the field, the
audit log, CSV export/import through the API, the pick list as inventory/picklist.py makes it,
and a count resolving its bin's stock notice before its response."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event, func, select

from dashboard_api.models import StockEventOut
from dashboard_api.routers.inventory import (
    MAX_IMPORT_BYTES,
    BinLevelOut,
    CsvErrorResponse,
    ImportOut,
    ItemOut,
    LedgerEntryOut,
    LocationOut,
    PickListOut,
    RoomStatusOut,
    TransactionOut,
)
from dashboard_api.viewcache import ViewCache
from eqmon.db.schema import inventory_ledger
from inventory.ledger import Ledger
from inventory.picklist import pick_list, render_csv
from inventory.status import bin_statuses
from simulators.servers import free_port
from tests.sitefiles import example_on_free_ports, site
from tests.test_api_support import NO_AUTH, InProcessApi, api_on_built_service, auth_headers

V1 = "/api/v1/inventory"
T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC: a fixed clock, so the API's "now" is the test's


@pytest.fixture
def api(state_db: str, tmp_path: Path) -> Iterator[InProcessApi]:
    """The whole example site (its smart shelves too: the bins name them) on ``state_db``, built
    with a broker section but not started, on a fixed clock."""
    data = example_on_free_ports(mqtt_port=free_port())
    data["database"] = {"url": state_db}
    with api_on_built_service(tmp_path, site=site(data), clock=lambda: T0) as a:
        yield a


def locations(api: InProcessApi) -> dict[str, int]:
    """Location name -> id (the example's names are unique)."""
    return {x["name"]: x["id"] for x in api.get(f"{V1}/locations?limit=1000").json()["items"]}


def tx(api: InProcessApi, key: str | None, headers: dict[str, str] | None = None, **body: Any) -> httpx.Response:
    h = dict(headers or {})
    if key is not None:
        h["Idempotency-Key"] = key
    return api.post(f"{V1}/transactions", json=body, headers=h)


def ledger_rows(api: InProcessApi) -> int:
    with api.service.db.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(inventory_ledger)).scalar_one())


def stock_alerts(api: InProcessApi) -> list[Any]:
    return [a for a in api.service.engine.active() if a.rule_id == "stock-level"]


# -- who may call what ------------------------------------------------------------------------


def test_every_route_answers_401_without_a_token_403_for_the_wrong_role_200_for_the_right_one(tmp_path: Path) -> None:
    with api_on_built_service(tmp_path) as api:
        ids = locations(api)
        state = api.service.state
        viewer, coordinator, supply = (auth_headers(state, r) for r in ("viewer", "coordinator", "supply"))
        reads = [
            f"{V1}/items", f"{V1}/items?q=glove&category=PPE", f"{V1}/locations", f"{V1}/locations?kind=room",
            f"{V1}/levels", f"{V1}/levels?status=below_reorder_point&location={ids['Ward 4B supply room']}",
            f"{V1}/rooms/{ids['Ward 4B supply room']}/status", f"{V1}/pick-list", f"{V1}/pick-list?format=csv",
            f"{V1}/transactions", f"{V1}/export/items", f"{V1}/export/locations", f"{V1}/export/bins",
        ]  # fmt: skip
        for url in reads:
            assert api.get(url, headers=NO_AUTH).status_code == 401, url
            for who in (viewer, coordinator, supply):
                r = api.get(url, headers=who)
                assert r.status_code == 200, (url, r.text)
        count = {"kind": "count", "sku": "GLV-NIT-M", "location_id": ids["A1"], "quantity": 200}
        items_csv = api.get(f"{V1}/export/items").text
        writes = [
            lambda h, n: tx(api, f"roles-{n}", h, **count),
            lambda h, n: api.post(f"{V1}/import/items", content=items_csv, headers={**h, "Content-Type": "text/csv"}),
        ]
        for n, write in enumerate(writes):
            assert write(NO_AUTH, n).status_code == 401
            for who in (viewer, coordinator):
                r = write(who, n)
                assert r.status_code == 403, r.text
                assert r.json()["error"]["code"] == "forbidden"
            assert write(supply, n).status_code == 200
        assert ledger_rows(api) == 1  # only supply's count


# -- reads ------------------------------------------------------------------------------------


def test_items_and_locations_filter_and_walk_their_pages(api: InProcessApi) -> None:
    skus = [ItemOut.model_validate(i).sku for i in api.get(f"{V1}/items").json()["items"]]
    assert skus == ["GLV-NIT-M", "LIN-SHEET", "MSK-SURG"]
    assert [i["sku"] for i in api.get(f"{V1}/items?q=MASK").json()["items"]] == ["MSK-SURG"]  # any case, the name
    assert [i["sku"] for i in api.get(f"{V1}/items?q=nit-m").json()["items"]] == ["GLV-NIT-M"]  # the SKU
    assert [i["sku"] for i in api.get(f"{V1}/items?category=PPE").json()["items"]] == ["GLV-NIT-M", "MSK-SURG"]
    assert api.get(f"{V1}/items?q=%25").json()["items"] == []  # LIKE wildcards are plain characters
    walked, cursor = [], None
    while True:
        page = api.get(f"{V1}/items", params={"limit": 1, **({"cursor": cursor} if cursor else {})}).json()
        walked += [i["sku"] for i in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert walked == skus

    locs = [LocationOut.model_validate(x) for x in api.get(f"{V1}/locations").json()["items"]]
    by = {x.name: x for x in locs}
    assert by["A1"].path == "Main building/Floor 4/Ward 4B supply room/Shelf A/A1"
    assert [x.name for x in locs if x.parent_id is None] == ["Main building"]
    rooms = api.get(f"{V1}/locations?kind=room").json()["items"]
    assert sorted(x["name"] for x in rooms) == ["Ward 4B linen bay", "Ward 4B supply room"]
    assert [x["name"] for x in api.get(f"{V1}/locations?parent={by['Shelf A'].id}").json()["items"]] == ["A1", "A2"]
    assert [x["name"] for x in api.get(f"{V1}/locations?roots=true").json()["items"]] == ["Main building"]
    first = api.get(f"{V1}/locations?limit=2").json()
    rest = api.get(f"{V1}/locations", params={"cursor": first["next_cursor"]}).json()
    assert [x["id"] for x in first["items"] + rest["items"]] == [x.id for x in locs]


def test_levels_show_each_bin_with_its_status_and_filter_by_location_status_and_sku(api: InProcessApi) -> None:
    ids = locations(api)
    assert tx(api, "c1", kind="count", sku="GLV-NIT-M", location_id=ids["A1"], quantity=120).status_code == 200
    assert tx(api, "c2", kind="count", sku="MSK-SURG", location_id=ids["A2"], quantity=300).status_code == 200
    assert tx(api, "i1", kind="issue", sku="MSK-SURG", location_id=ids["A2"], quantity=24).status_code == 200
    bins = {b.sku: b for b in (BinLevelOut.model_validate(x) for x in api.get(f"{V1}/levels").json()["items"])}
    g, m, s = bins["GLV-NIT-M"], bins["MSK-SURG"], bins["LIN-SHEET"]
    assert (g.on_hand, g.level, g.status_text, g.below_reorder_point, g.counted) == (120, "below_reorder", "below reorder point", True, True)
    assert (g.path, g.room, g.room_id, g.location) == ("Ward 4B supply room / Shelf A / A1", "Ward 4B supply room", ids["Ward 4B supply room"], "A1")
    assert (g.min_qty, g.reorder_point, g.par, g.packs_to_par, g.source, g.shelf_device_id) == (50, 150, 500, 4, "shelf", "shelf-gloves")
    assert g.updated_at == T0 and g.subject == f"bin:GLV-NIT-M@{ids['A1']}"
    assert (m.on_hand, m.level, m.use_per_day > 0, m.days_of_supply is not None) == (276, "in_stock", True, True)
    assert m.days_of_supply == pytest.approx(276 / m.use_per_day)
    assert (s.counted, s.status_text, s.updated_at) == (False, "not counted yet: stock unknown", None)

    def skus(query: str) -> list[str]:
        r = api.get(f"{V1}/levels?{query}")
        assert r.status_code == 200, r.text
        return sorted(b["sku"] for b in r.json()["items"])

    assert skus(f"location={ids['Ward 4B supply room']}") == ["GLV-NIT-M", "MSK-SURG"]  # its shelf's bins
    assert skus(f"location={ids['A2']}") == ["MSK-SURG"]
    assert skus("status=below_reorder_point") == ["GLV-NIT-M", "LIN-SHEET"]  # the linen: never counted, 0
    assert skus("status=in_stock") == ["MSK-SURG"]
    assert skus("status=below_reorder&status=in_stock") == ["GLV-NIT-M", "MSK-SURG"]
    assert skus("sku=MSK-SURG") == ["MSK-SURG"]
    assert skus(f"sku=MSK-SURG&location={ids['Ward 4B linen bay']}") == []
    page = api.get(f"{V1}/levels?limit=2").json()
    more = api.get(f"{V1}/levels", params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert [b["bin_id"] for b in page["items"] + more["items"]] == sorted(b.bin_id for b in bins.values())
    assert more["next_cursor"] is None
    r = api.get(f"{V1}/levels?location=99999")
    assert (r.status_code, r.json()["error"]["field"]) == (422, "query.location")


def test_one_rooms_status_counts_its_bins_by_level_in_two_queries(api: InProcessApi) -> None:
    ids = locations(api)
    room = ids["Ward 4B supply room"]
    tx(api, "c1", kind="count", sku="GLV-NIT-M", location_id=ids["A1"], quantity=40)
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(api.service.db, "before_cursor_execute", seen)
    try:
        r = api.get(f"{V1}/rooms/{room}/status")
    finally:
        event.remove(api.service.db, "before_cursor_execute", seen)
    assert r.status_code == 200, r.text
    assert len([s for s in statements if "inventory_" in s]) == 2  # the room and its path, its bins
    out = RoomStatusOut.model_validate(r.json())
    assert (out.room.id, out.room.name, out.generated_at) == (room, "Ward 4B supply room", T0)
    assert (out.bins, out.below_reorder_point, out.levels) == (2, 2, {"below_min": 1, "out": 1})
    assert [(b.path, b.sku, b.on_hand) for b in out.items] == [
        ("Ward 4B supply room / Shelf A / A1", "GLV-NIT-M", 40), ("Ward 4B supply room / Shelf A / A2", "MSK-SURG", 0),
    ]  # fmt: skip
    first = api.get(f"{V1}/rooms/{room}/status?limit=1").json()
    second = api.get(f"{V1}/rooms/{room}/status", params={"limit": 1, "cursor": first["next_cursor"]}).json()
    assert [b["sku"] for b in first["items"] + second["items"]] == ["GLV-NIT-M", "MSK-SURG"]
    assert second["next_cursor"] is None and second["bins"] == 2
    for where, why in ((ids["Shelf A"], "is a shelf, not a room"), (99999, "no location 99999")):
        r = api.get(f"{V1}/rooms/{where}/status")
        assert r.status_code == 404 and why in r.json()["error"]["message"], r.text


def test_the_pick_list_is_inventory_picklists_as_json_and_csv(api: InProcessApi) -> None:
    ids = locations(api)
    tx(api, "c1", kind="count", sku="GLV-NIT-M", location_id=ids["A1"], quantity=120)
    tx(api, "c2", kind="count", sku="MSK-SURG", location_id=ids["A2"], quantity=300)
    tx(api, "i1", kind="issue", sku="MSK-SURG", location_id=ids["A2"], quantity=200)
    for query, top_up, where in (("", False, None), ("?top_up=true", True, None),
                                 (f"?location={ids['Ward 4B supply room']}", False, ids["Ward 4B supply room"])):  # fmt: skip
        expected = pick_list(bin_statuses(api.service.db, now=T0, location_id=where), now=T0, top_up=top_up)
        r = api.get(f"{V1}/pick-list{query}")
        got = PickListOut.model_validate(r.json())
        assert got.generated_at == T0
        assert [(p.urgency, p.sku, p.location_id, p.packs, p.quantity) for p in got.lines] == [
            (p.urgency, p.sku, p.location_id, p.packs, p.quantity) for p in expected
        ]
        assert [p.model_dump() for p in got.lines] == [{k: getattr(p, k) for k in p.__dataclass_fields__} for p in expected]
        sep = "&" if "?" in query else "?"
        c = api.get(f"{V1}/pick-list{query}{sep}format=csv")
        assert c.headers["content-type"].startswith("text/csv")
        assert c.text == render_csv(expected)
    assert [p["sku"] for p in api.get(f"{V1}/pick-list").json()["lines"]][:1] == ["LIN-SHEET"]  # out (never counted)


# -- writes -----------------------------------------------------------------------------------


def test_a_key_is_applied_once_the_same_body_answers_the_first_result_another_body_is_a_conflict(api: InProcessApi) -> None:
    ids = locations(api)
    supply = auth_headers(api.service.state, "supply", "sam")
    body = {"kind": "receipt", "sku": "GLV-NIT-M", "location_id": ids["A1"], "quantity": 300, "note": "delivery 42"}
    first = tx(api, "rcpt-1", supply, **body)
    assert first.status_code == 200, first.text
    assert "idempotent-replayed" not in first.headers
    out = TransactionOut.model_validate(first.json())
    (e,) = out.entries
    assert (e.kind, e.delta, e.balance, e.who, e.note, e.idempotency_key) == ("receipt", 300, 300, "sam", "delivery 42", "rcpt-1")
    again = tx(api, "rcpt-1", supply, **body)
    assert (again.status_code, again.json(), again.headers["idempotent-replayed"]) == (200, first.json(), "true")
    assert ledger_rows(api) == 1
    for change in ({"quantity": 301}, {"location_id": ids["A2"]}, {"kind": "issue"}, {"sku": "MSK-SURG"}, {"note": "another"}):
        r = tx(api, "rcpt-1", supply, **{**body, **change})
        assert r.status_code == 409, (change, r.text)
        assert (r.json()["error"]["code"], r.json()["error"]["field"]) == ("conflict", "header.Idempotency-Key")
    assert ledger_rows(api) == 1
    # the audit log and the ledger have the user
    (entry,) = api.service.state.audit_log.list(subject=f"bin:GLV-NIT-M@{ids['A1']}")
    assert (entry.action, entry.actor) == ("inventory.receipt", "sam")
    assert entry.detail["key"] == "rcpt-1" and entry.detail["quantity"] == 300 and entry.detail["ledger_ids"] == [e.id]


def test_concurrent_requests_with_one_key_make_one_change(api: InProcessApi) -> None:
    """Eight requests at once under one key (run in the API's worker threads): one ledger row,
    eight identical answers; then eight issues of 3 from 20 under their own keys: exactly six."""
    ids = locations(api)
    body = {"kind": "receipt", "sku": "MSK-SURG", "location_id": ids["A2"], "quantity": 20}

    async def burst(bodies: list[tuple[str, dict[str, Any]]]) -> list[httpx.Response]:
        return list(await asyncio.gather(*[
            api.client.post(f"{V1}/transactions", json=b, headers={"Idempotency-Key": k}) for k, b in bodies
        ]))  # fmt: skip

    same = api.run(burst([("same", body)] * 8))
    assert {r.status_code for r in same} == {200}
    assert len({r.text for r in same}) == 1
    assert sum(1 for r in same if "idempotent-replayed" not in r.headers) == 1
    assert ledger_rows(api) == 1
    issue = {"kind": "issue", "sku": "MSK-SURG", "location_id": ids["A2"], "quantity": 3}
    many = api.run(burst([(f"issue-{n}", issue) for n in range(8)]))
    assert sorted(r.status_code for r in many) == [200] * 6 + [422] * 2
    assert {r.json()["error"]["code"] for r in many if r.status_code == 422} == {"insufficient_stock"}
    (level,) = api.get(f"{V1}/levels?sku=MSK-SURG").json()["items"]
    assert level["on_hand"] == 2 and ledger_rows(api) == 7


@pytest.mark.parametrize(
    ("change", "headers", "field"),
    [
        ({}, {"Idempotency-Key": None}, "header.Idempotency-Key"),
        ({}, {"Idempotency-Key": "k" * 201}, "header.Idempotency-Key"),
        ({}, {"Idempotency-Key": "two words"}, "header.Idempotency-Key"),
        ({"kind": "steal"}, {}, "body.kind"),
        ({"sku": ""}, {}, "body.sku"),
        ({"sku": "S" * 65}, {}, "body.sku"),
        ({"sku": "NO-SUCH"}, {}, "body.sku"),
        ({"location_id": 0}, {}, "body.location_id"),
        ({"location_id": "5"}, {}, "body.location_id"),
        ({"location_id": 99999}, {}, "body.location_id"),
        ({"location_id": 2**40}, {}, "body.location_id"),
        ({"quantity": 1_000_001}, {}, "body.quantity"),
        ({"quantity": 1.5}, {}, "body.quantity"),
        ({"quantity": True}, {}, "body.quantity"),
        ({"quantity": 0}, {}, "body.quantity"),
        ({"kind": "count", "quantity": -1}, {}, "body.quantity"),
        ({"kind": "adjustment", "quantity": 0, "note": "x"}, {}, "body.quantity"),
        ({"kind": "adjustment", "quantity": -1, "note": "  "}, {}, "body.note"),
        ({"kind": "adjustment", "quantity": -1, "note": "damaged"}, {}, "body.quantity"),  # below zero
        ({"kind": "issue", "quantity": 1}, {}, "body.quantity"),  # nothing on hand
        ({"kind": "transfer"}, {}, "body.to_location_id"),
        ({"kind": "transfer", "to_location_id": "A1"}, {}, "body.to_location_id"),
        ({"kind": "transfer", "to_location_id": 99999}, {}, "body.to_location_id"),
        ({"to_location_id": "A2"}, {}, "body.to_location_id"),  # only a transfer has one
        ({"note": "n" * 501}, {}, "body.note"),
        ({"quantiy": 5}, {}, "body.quantiy"),  # unknown fields are refused
    ],
)
def test_a_bad_transaction_is_a_422_naming_the_field_and_writes_nothing(
    tmp_path: Path, change: dict[str, Any], headers: dict[str, Any], field: str
) -> None:
    with api_on_built_service(tmp_path) as api:
        ids = locations(api)
        body: dict[str, Any] = {"kind": "receipt", "sku": "GLV-NIT-M", "location_id": ids["A1"], "quantity": 5}
        for k, v in change.items():
            body[k] = ids[v] if k.endswith("location_id") and isinstance(v, str) and v in ids else v
        h = {"Idempotency-Key": "key-1", **headers}
        r = api.post(f"{V1}/transactions", json=body, headers={k: v for k, v in h.items() if v is not None})
        assert r.status_code == 422, r.text
        err = r.json()["error"]
        assert err["field"] == field, err
        assert set(err) == {"code", "message", "field"}
        assert ledger_rows(api) == 0
        assert api.service.state.audit_log.list() == [] or all(not e.action.startswith("inventory.") for e in api.service.state.audit_log.list())


def test_refused_requests_keep_no_key_and_transfers_counts_and_adjustments_work(api: InProcessApi) -> None:
    ids = locations(api)
    a1, a2 = ids["A1"], ids["A2"]
    r = tx(api, "issue-1", kind="issue", sku="GLV-NIT-M", location_id=a1, quantity=10)
    assert r.status_code == 422 and "only 0 on hand" in r.json()["error"]["message"]
    assert tx(api, "rc", kind="receipt", sku="GLV-NIT-M", location_id=a1, quantity=100).status_code == 200
    assert tx(api, "issue-1", kind="issue", sku="GLV-NIT-M", location_id=a1, quantity=10).status_code == 200  # the key again
    t = TransactionOut.model_validate(tx(api, "tr", kind="transfer", sku="GLV-NIT-M", location_id=a1, to_location_id=a2, quantity=30).json())
    assert [(e.location_id, e.location, e.delta, e.balance, e.leg) for e in t.entries] == [(a1, "A1", -30, 60, 0), (a2, "A2", 30, 30, 1)]
    c = TransactionOut.model_validate(tx(api, "ct", kind="count", sku="GLV-NIT-M", location_id=a1, quantity=58, note="shelf count").json())
    assert [(e.delta, e.balance, e.counted, e.note) for e in c.entries] == [(-2, 58, 58, "shelf count")]
    a = TransactionOut.model_validate(tx(api, "adj", kind="adjustment", sku="GLV-NIT-M", location_id=a1, quantity=-8, note="torn boxes").json())
    assert [(e.delta, e.balance) for e in a.entries] == [(-8, 50)]
    actions = [(e.action, e.subject) for e in reversed(api.service.state.audit_log.list())]
    assert actions == [("inventory.receipt", f"bin:GLV-NIT-M@{a1}"), ("inventory.issue", f"bin:GLV-NIT-M@{a1}"),
                       ("inventory.transfer", f"bin:GLV-NIT-M@{a1}"), ("inventory.count", f"bin:GLV-NIT-M@{a1}"),
                       ("inventory.adjustment", f"bin:GLV-NIT-M@{a1}")]  # fmt: skip


def test_transactions_list_newest_first_with_filters_and_pages(api: InProcessApi) -> None:
    ids = locations(api)
    tx(api, "r1", kind="receipt", sku="GLV-NIT-M", location_id=ids["A1"], quantity=100)
    tx(api, "r2", kind="receipt", sku="MSK-SURG", location_id=ids["A2"], quantity=50)
    tx(api, "r3", kind="receipt", sku="LIN-SHEET", location_id=ids["Linen rack"], quantity=20)
    tx(api, "t1", kind="transfer", sku="GLV-NIT-M", location_id=ids["A1"], to_location_id=ids["Linen rack"], quantity=10)
    rows = [LedgerEntryOut.model_validate(x) for x in api.get(f"{V1}/transactions").json()["items"]]
    assert [(e.idempotency_key, e.leg) for e in rows] == [("t1", 1), ("t1", 0), ("r3", 0), ("r2", 0), ("r1", 0)]
    assert rows[0].who == "test-admin" and rows[0].sku == "GLV-NIT-M" and rows[0].location == "Linen rack"

    def keys(query: str) -> list[str]:
        r = api.get(f"{V1}/transactions?{query}")
        assert r.status_code == 200, r.text
        return [x["idempotency_key"] for x in r.json()["items"]]

    assert keys("sku=GLV-NIT-M") == ["t1", "t1", "r1"]
    assert keys(f"location={ids['Ward 4B supply room']}") == ["t1", "r2", "r1"]  # under the room
    assert keys(f"location={ids['Ward 4B linen bay']}") == ["t1", "r3"]
    assert keys("kind=transfer") == ["t1", "t1"]
    assert keys("kind=receipt&kind=count&sku=MSK-SURG") == ["r2"]
    assert keys(f"since={T0}") == ["t1", "t1", "r3", "r2", "r1"] and keys(f"since={T0 + 1}") == []
    walked, cursor = [], None
    while True:
        page = api.get(f"{V1}/transactions", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        walked += [x["id"] for x in page["items"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert walked == [e.id for e in rows]
    for bad, field in (("location=99999", "query.location"), ("kind=theft", "query.kind.0"), ("since=nan", "query.since"),
                       ("cursor=bm9wZQ", "query.cursor"), ("limit=0", "query.limit")):  # fmt: skip
        r = api.get(f"{V1}/transactions?{bad}")
        assert (r.status_code, r.json()["error"]["field"]) == (422, field), (bad, r.text)
    # a cursor of another list is not this one's
    items_cursor = api.get(f"{V1}/items?limit=1").json()["next_cursor"]
    r = api.get(f"{V1}/transactions", params={"cursor": items_cursor})
    assert (r.status_code, r.json()["error"]["field"]) == (422, "query.cursor")


def test_a_count_that_restores_a_bin_resolves_its_stock_notice_before_its_answer(api: InProcessApi) -> None:
    """...and the live updates get a ``stock`` event for each change before the answer too."""
    ids = locations(api)
    subject = f"bin:GLV-NIT-M@{ids['A1']}"
    hub = api.service.state.events
    start = hub.last_id
    assert stock_alerts(api) == []
    assert tx(api, "low", kind="count", sku="GLV-NIT-M", location_id=ids["A1"], quantity=120).status_code == 200
    (alert,) = stock_alerts(api)  # raised at once, not at the next review (60 s)
    assert alert.device_id == subject and "exam gloves M 120 left" in alert.message
    assert tx(api, "restocked", kind="count", sku="GLV-NIT-M", location_id=ids["A1"], quantity=480).status_code == 200
    assert stock_alerts(api) == []
    stored = api.service.alert_store.get(alert.id)
    assert stored is not None and str(stored.state) == "resolved"
    # an issue that takes it below again raises a new one
    assert tx(api, "busy", kind="issue", sku="GLV-NIT-M", location_id=ids["A1"], quantity=340).status_code == 200
    (again,) = stock_alerts(api)
    assert again.id != alert.id and "140 left" in again.message
    events = [StockEventOut.model_validate_json(e.data) for e in hub.events_after(start, ["stock"])]
    assert [(e.sku, e.location_id, e.on_hand, e.level) for e in events] == [
        ("GLV-NIT-M", ids["A1"], 120, "below_reorder"), ("GLV-NIT-M", ids["A1"], 480, "in_stock"),
        ("GLV-NIT-M", ids["A1"], 140, "below_reorder"),
    ]  # fmt: skip
    # a replay changes nothing and publishes nothing
    assert tx(api, "busy", kind="issue", sku="GLV-NIT-M", location_id=ids["A1"], quantity=340).status_code == 200
    assert len(hub.events_after(start, ["stock"])) == 3


# -- CSV --------------------------------------------------------------------------------------


def test_csv_export_imports_back_unchanged_and_an_import_changes_the_catalog(api: InProcessApi) -> None:
    for kind in ("items", "locations", "bins"):
        r = api.get(f"{V1}/export/{kind}")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert f'filename="{kind}.csv"' in r.headers["content-disposition"]
        back = api.post(f"{V1}/import/{kind}", content=r.text.encode(), headers={"Content-Type": "text/csv"})
        assert back.status_code == 200, back.text
        out = ImportOut.model_validate(back.json())
        assert (out.kind, out.added, out.changed, out.applied) == (kind, 0, 0, True)
        assert out.unchanged == out.rows == len(r.text.strip().splitlines()) - 1
    supply = auth_headers(api.service.state, "supply", "sam")
    new_items = "sku,name,category,pack_size,unit_weight_g\nPAPER-A4,\"paper, A4\",office,5,\nGLV-NIT-M,exam gloves M,PPE,200,5.6\n"
    dry = api.post(f"{V1}/import/items?dry_run=true", content=new_items, headers=supply)
    assert dry.status_code == 200, dry.text
    assert (dry.json()["applied"], dry.json()["added"]) == (False, 1)
    assert [i["sku"] for i in api.get(f"{V1}/items?q=paper").json()["items"]] == []
    r = api.post(f"{V1}/import/items", content=new_items, headers=supply)
    out = ImportOut.model_validate(r.json())
    assert (out.added_names, out.changed_names, out.unchanged) == (["PAPER-A4"], ["GLV-NIT-M"], 0)
    rows = list(csv.DictReader(io.StringIO(api.get(f"{V1}/export/items").text)))
    assert {r["sku"]: (r["name"], r["pack_size"]) for r in rows}["PAPER-A4"] == ("paper, A4", "5")
    assert {r["sku"]: r["pack_size"] for r in rows}["GLV-NIT-M"] == "200"
    (entry,) = api.service.state.audit_log.list(subject="csv:items")  # not the dry run, nor an import changing nothing
    assert (entry.action, entry.actor, entry.detail["added"], entry.detail["changed"]) == ("inventory.import", "sam", 1, 1)
    locs = "path,kind\nMain building/Floor 4/Ward 4C supply room,room\nMain building/Floor 4/Ward 4C supply room/Shelf B,shelf\n"
    assert api.post(f"{V1}/import/locations", content=locs).json()["added"] == 2
    bins = "item,location,min,reorder_point,par\nPAPER-A4,Ward 4C supply room/Shelf B,2,4,10\n"
    assert api.post(f"{V1}/import/bins", content=bins).json()["added"] == 1
    room = locations(api)["Ward 4C supply room"]
    (b,) = api.get(f"{V1}/rooms/{room}/status").json()["items"]
    assert (b["sku"], b["path"], b["par"], b["counted"]) == ("PAPER-A4", "Ward 4C supply room / Shelf B", 10, False)


def test_a_bad_csv_file_lists_every_problem_by_line_and_column_and_applies_nothing(api: InProcessApi) -> None:
    before = api.get(f"{V1}/export/bins").text
    bad = "item,location,min,reorder_point,par\nGLV-NIT-M,A1,50,150,abc\nNO-SUCH,A2,1,2,3\nMSK-SURG,A2,9,5,10\n"
    r = api.post(f"{V1}/import/bins", content=bad)
    assert r.status_code == 422, r.text
    err = CsvErrorResponse.model_validate(r.json()).error
    assert (err.code, err.field, err.issue_count) == ("validation_error", "body", len(err.issues))
    assert [(i.line, i.column) for i in err.issues][:1] == [(2, "par")]
    assert err.issues[0].column_letter == "E"
    assert {i.line for i in err.issues} >= {2}
    assert "nothing applied" in err.message
    assert api.get(f"{V1}/export/bins").text == before
    # the file as a whole: no header, not UTF-8
    assert api.post(f"{V1}/import/items", content=b"").status_code == 422
    r = api.post(f"{V1}/import/items", content=b"sku,name\n\xff\xfe,x\n")
    assert (r.status_code, r.json()["error"]["field"]) == (422, "body")
    assert api.post(f"{V1}/import/things", content=b"a\n").json()["error"]["field"] == "path.kind"


def test_an_import_takes_a_larger_body_than_the_rest_of_the_api_up_to_its_own_limit(tmp_path: Path) -> None:
    with api_on_built_service(tmp_path) as api:
        rows = "".join(f"SKU-{n:06d},item number {n} with a longer name,bulk,each,1,,false\n" for n in range(2000))
        big = "sku,name,category,unit,pack_size,unit_weight_g,critical\n" + rows
        assert 64 * 1024 < len(big) < MAX_IMPORT_BYTES
        r = api.post(f"{V1}/import/items", content=big)
        assert r.status_code == 200 and r.json()["added"] == 2000, r.text[:300]
        # the rest of the API keeps its 64 KiB, this route has its own limit
        padding = {"kind": "receipt", "sku": "GLV-NIT-M", "location_id": 5, "quantity": 1, "note": "x" * 70_000}
        r = api.post(f"{V1}/transactions", json=padding, headers={"Idempotency-Key": "big"})
        assert (r.status_code, r.json()["error"]["code"]) == (413, "payload_too_large")
        r = api.post(f"{V1}/import/items", content=b"x" * (MAX_IMPORT_BYTES + 1))
        assert (r.status_code, r.json()["error"]["field"]) == (413, "body")
        assert str(MAX_IMPORT_BYTES) in r.json()["error"]["message"]


def test_a_large_subtree_is_read_in_one_query_with_the_same_answers(api: InProcessApi, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``status.MAX_LISTED`` locations the bins under a location are read with the subtree
    in SQL instead of as a list of ids: the same rows either way."""
    from inventory import status

    ids = locations(api)
    tx(api, "c1", kind="count", sku="GLV-NIT-M", location_id=ids["A1"], quantity=120)
    urls = [f"{V1}/rooms/{ids['Ward 4B supply room']}/status", f"{V1}/levels?location={ids['Floor 4']}",
            f"{V1}/levels?location={ids['Ward 4B supply room']}&status=below_reorder", f"{V1}/pick-list?location={ids['Main building']}"]  # fmt: skip
    listed = [api.get(u).json() for u in urls]
    monkeypatch.setattr(status, "MAX_LISTED", 0)
    api.service.state.stock_views.changed()  # not the room's cached answer
    assert [api.get(u).json() for u in urls] == listed
    assert len(listed[1]["items"]) == 3 and [b["sku"] for b in listed[2]["items"]] == ["GLV-NIT-M"]


def test_a_rooms_status_is_kept_until_stock_changes(api: InProcessApi) -> None:
    """The room's answer is served again without the database until a stock change: at once
    for one made through the API, at the stock event of the review for one made elsewhere."""
    ids = locations(api)
    room = f"{V1}/rooms/{ids['Ward 4B supply room']}/status"
    views = api.service.state.stock_views
    tx(api, "c1", kind="count", sku="GLV-NIT-M", location_id=ids["A1"], quantity=120)
    first = api.get(room)
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(api.service.db, "before_cursor_execute", seen)
    try:
        again = api.get(room)
    finally:
        event.remove(api.service.db, "before_cursor_execute", seen)
    assert again.content == first.content and [s for s in statements if "inventory_" in s] == []
    assert (views.hits, views.misses) == (1, 1)
    assert "eqmon_api_room_status_cache_hits_total 1.0" in api.get("/metrics").text

    def on_hand() -> int:
        (glove,) = [b for b in api.get(room).json()["items"] if b["sku"] == "GLV-NIT-M"]
        return int(glove["on_hand"])

    tx(api, "c2", kind="count", sku="GLV-NIT-M", location_id=ids["A1"], quantity=480)
    assert on_hand() == 480  # at once
    # a change the API did not make (the CLI, a shelf): kept until the review's stock event
    Ledger(api.service.db, clock=lambda: T0).issue(1, ids["A1"], 30, who="cli", key="elsewhere")
    assert on_hand() == 480
    api.run(api.service._review_stock(T0))
    assert on_hand() == 450


def test_a_page_begun_before_a_change_is_not_kept() -> None:
    views = ViewCache()
    begun = views.generation
    views.changed()  # stock changed while the page was built
    views.put("room", b"old", begun)
    assert views.get("room") is None
    views.put("room", b"new", views.generation)
    assert views.get("room") == b"new"
