"""The stock ledger: every change of stock is a row of ``inventory_ledger`` (receipt, issue,
transfer, count, adjustment, shelf) with who, when, why and an idempotency key, and
``inventory_on_hand`` is changed in the same transaction, so on-hand is always the sum of the
ledger (``Ledger.verify`` checks it).

Guarantees (docs/inventory.md):

* **Idempotent**: a key is applied once. The same key again returns the first result
  (``Applied.replayed``) and changes nothing; the same key for a different request raises
  ``IdempotencyConflict``. A refused request (``InsufficientStock``) writes nothing and keeps
  nothing, so it may be retried under the same key.
* **No lost change**: every write locks the on-hand rows it changes (``SELECT … FOR UPDATE``
  on PostgreSQL, in a fixed order so that two transfers cannot deadlock; SQLite has one writer,
  ``BEGIN IMMEDIATE``) before it reads them or looks up its key; a transaction that still loses
  a race (a key taken by a concurrent request for another bin, a serialization failure) is
  retried a few times.
* **Never negative**: an issue, transfer or adjustment that would leave less than nothing is
  refused with ``InsufficientStock`` / ``InventoryError``; the database checks it too.

Quantities are whole units of the item. Items, locations and bins are ``catalog.Catalog``'s.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from sqlalchemy import (
    Connection,
    Engine,
    RowMapping,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, IntegrityError

from eqmon.db import writing
from eqmon.db.schema import (
    inventory_items,
    inventory_ledger,
    inventory_locations,
    inventory_on_hand,
)

from .errors import IdempotencyConflict, InsufficientStock, InventoryError
from .usage import add_use, is_use

Kind = Literal["receipt", "issue", "transfer", "count", "adjustment", "shelf"]
KINDS: tuple[Kind, ...] = get_args(Kind)
MAX_KEY = 200
ATTEMPTS = 5
# PostgreSQL: serialization failure, deadlock detected: the transaction may simply run again.
_RETRY_SQLSTATES = {"40001", "40P01"}


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger row: ``delta`` changed the on-hand of ``item_id`` at ``location_id`` to
    ``balance``; ``counted`` is what a count or a shelf reading found."""

    id: int
    ts: float
    item_id: int
    location_id: int
    kind: Kind
    delta: int
    balance: int
    counted: int | None
    who: str
    why: str
    idempotency_key: str
    leg: int  # 0; a transfer's row into its destination: 1


@dataclass(frozen=True, slots=True)
class Applied:
    """The rows a request wrote (a transfer: out of the source, then into the destination).
    ``replayed``: the key had been applied before and these are that first result."""

    entries: tuple[Entry, ...]
    replayed: bool = False

    @property
    def skipped(self) -> bool:
        """Nothing written and nothing replayed (``shelf_counts(…, newer_only=True)``: a reading
        older than its bin's last change, or finding what is on hand)."""
        return not self.entries

    @property
    def entry(self) -> Entry:
        """The first (for all but a transfer, the only) row."""
        return self.entries[0]


@dataclass(frozen=True, slots=True)
class Mismatch:
    """A bin whose on-hand is not the sum of its ledger rows (or not its last row's balance)."""

    item_id: int
    location_id: int
    on_hand: int | None  # None: no on-hand row
    ledger_sum: int
    last_balance: int | None  # None: no ledger rows


@dataclass(frozen=True, slots=True)
class ShelfReading:
    """One smart-shelf reading already turned into a trusted count, for ``Ledger.shelf_counts``
    (the arguments of ``shelf_count``)."""

    item_id: int
    location_id: int
    counted: int
    who: str
    key: str
    why: str = ""
    at: float | None = None


@dataclass(frozen=True, slots=True)
class _Leg:
    location_id: int
    delta: int | None = None  # add this …
    counted: int | None = None  # … or set on-hand to this (a count, a shelf reading)


@dataclass(frozen=True, slots=True)
class _Request:
    kind: Kind
    item_id: int
    legs: tuple[_Leg, ...]
    who: str
    why: str
    key: str
    ts: float


class Ledger:
    def __init__(self, engine: Engine, *, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock

    # -- writes ------------------------------------------------------------------------------

    def receive(self, item_id: int, location_id: int, quantity: int, *, who: str, key: str,
                why: str = "", at: float | None = None) -> Applied:  # fmt: skip
        """Stock arrived at a location (a delivery, a restock run)."""
        _positive("receive", quantity)
        return self._apply("receipt", item_id, (_Leg(location_id, delta=quantity),), who, why, key, at)

    def issue(self, item_id: int, location_id: int, quantity: int, *, who: str, key: str,
              why: str = "", at: float | None = None) -> Applied:  # fmt: skip
        """Stock taken for use; ``InsufficientStock`` (nothing written) if fewer are on hand."""
        _positive("issue", quantity)
        return self._apply("issue", item_id, (_Leg(location_id, delta=-quantity),), who, why, key, at)

    def transfer(self, item_id: int, from_location_id: int, to_location_id: int, quantity: int, *,
                 who: str, key: str, why: str = "", at: float | None = None) -> Applied:  # fmt: skip
        """Stock moved between locations: two rows (out, in) in one transaction."""
        _positive("transfer", quantity)
        if from_location_id == to_location_id:
            raise InventoryError(f"transfer of item {item_id}: from and to are the same location ({from_location_id})")
        legs = (_Leg(from_location_id, delta=-quantity), _Leg(to_location_id, delta=quantity))
        return self._apply("transfer", item_id, legs, who, why, key, at)

    def count(self, item_id: int, location_id: int, counted: int, *, who: str, key: str,
              why: str = "", at: float | None = None) -> Applied:  # fmt: skip
        """A person counted the bin: on-hand becomes ``counted``; the row's delta is the
        correction (0 when the count agreed)."""
        return self._set("count", item_id, location_id, counted, who, why, key, at)

    def shelf_count(self, item_id: int, location_id: int, counted: int, *, who: str, key: str,
                    why: str = "", at: float | None = None) -> Applied:  # fmt: skip
        """A smart shelf's reading, already turned into a trusted count (``shelf.weight_to_count``
        and its flags are the caller's): recorded like a count, kind ``shelf``; ``who`` is the
        shelf device."""
        return self._set("shelf", item_id, location_id, counted, who, why, key, at)

    def shelf_counts(self, readings: Sequence[ShelfReading], *, newer_only: bool = False) -> list[Applied]:
        """Many shelf readings in one transaction (what a feed collecting them for a moment
        does): each is applied exactly as ``shelf_count`` would, in the order given, and the
        results come in that order (a key already applied, or repeated in the batch, is
        replayed). All or nothing: an unknown item or location, a bad reading or a key used
        for another request raises (``InventoryError``, ``IdempotencyConflict``) and writes
        nothing. Its rows lock their bins in (item, location) order, as every write does.

        ``newer_only`` (the shelf feed, inventory/feed.py): a reading older than its bin's last
        change (on-hand ``updated_at``: a person's count since, an earlier reading redelivered
        after a later one, a retained state after a restart) or finding what is on hand writes
        nothing; its result is ``Applied((), skipped)``."""
        if not readings:
            return []
        now = self._clock()
        for r in readings:
            if r.counted < 0:
                raise InventoryError(f"shelf of item {r.item_id} at location {r.location_id}: {r.counted} is below 0")
            if not r.key or len(r.key) > MAX_KEY:
                raise InventoryError(f"an idempotency key is 1 to {MAX_KEY} characters, got {len(r.key)}")
            if not r.who:
                raise InventoryError("say who (a person or a device)")
        reqs = [
            _Request("shelf", r.item_id, (_Leg(r.location_id, counted=r.counted),), r.who, r.why, r.key,
                     now if r.at is None else r.at)
            for r in readings
        ]  # fmt: skip
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with writing(self._engine) as conn:
                    return _apply_shelf_batch(conn, reqs, newer_only=newer_only)
            except IntegrityError:
                if attempt == ATTEMPTS:
                    raise
            except DBAPIError as exc:
                if attempt == ATTEMPTS or getattr(exc.orig, "sqlstate", None) not in _RETRY_SQLSTATES:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def adjust(self, item_id: int, location_id: int, delta: int, *, who: str, why: str, key: str,
               at: float | None = None) -> Applied:  # fmt: skip
        """A correction by a signed amount (damaged, expired, found); ``why`` is required."""
        if delta == 0:
            raise InventoryError(f"adjustment of item {item_id} at location {location_id}: delta must not be 0")
        if not why.strip():
            raise InventoryError(f"adjustment of item {item_id} at location {location_id}: say why")
        return self._apply("adjustment", item_id, (_Leg(location_id, delta=delta),), who, why, key, at)

    def _set(self, kind: Kind, item_id: int, location_id: int, counted: int, who: str, why: str,
             key: str, at: float | None) -> Applied:  # fmt: skip
        if counted < 0:
            raise InventoryError(f"{kind} of item {item_id} at location {location_id}: {counted} is below 0")
        return self._apply(kind, item_id, (_Leg(location_id, counted=counted),), who, why, key, at)

    def _apply(self, kind: Kind, item_id: int, legs: tuple[_Leg, ...], who: str, why: str, key: str,
               at: float | None) -> Applied:  # fmt: skip
        if not key or len(key) > MAX_KEY:
            raise InventoryError(f"an idempotency key is 1 to {MAX_KEY} characters, got {len(key)}")
        if not who:
            raise InventoryError("say who (a person or a device)")
        req = _Request(kind, item_id, legs, who, why, key, self._clock() if at is None else at)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                with writing(self._engine) as conn:
                    return _apply_in(conn, req)
            except IntegrityError:
                # The key was taken by a concurrent request between our look-up and our insert
                # (possible only for a request on other bins): look again in a new transaction,
                # which replays it or raises IdempotencyConflict. Any other violation: raise.
                if attempt == ATTEMPTS or not self.by_key(key):
                    raise
            except DBAPIError as exc:
                if attempt == ATTEMPTS or getattr(exc.orig, "sqlstate", None) not in _RETRY_SQLSTATES:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    # -- reads -------------------------------------------------------------------------------

    def on_hand(self, item_id: int, location_id: int) -> int:
        oh = inventory_on_hand.c
        with self._engine.connect() as conn:
            q = select(oh.quantity).where(oh.item_id == item_id, oh.location_id == location_id)
            return int(conn.execute(q).scalar() or 0)

    def on_hand_at(self, location_id: int) -> dict[int, int]:
        """Item id -> on-hand at one location (items that were never there: absent)."""
        oh = inventory_on_hand.c
        with self._engine.connect() as conn:
            rows = conn.execute(select(oh.item_id, oh.quantity).where(oh.location_id == location_id)).all()
        return {r.item_id: r.quantity for r in rows}

    def history(self, item_id: int, location_id: int, limit: int = 200) -> list[Entry]:
        """One bin's rows, newest first."""
        c = inventory_ledger.c
        q = select(inventory_ledger).where(c.item_id == item_id, c.location_id == location_id)
        with self._engine.connect() as conn:
            rows = conn.execute(q.order_by(c.id.desc()).limit(limit)).mappings().all()
        return [_entry(r) for r in rows]

    def by_key(self, key: str) -> tuple[Entry, ...]:
        """The rows written under ``key`` (empty: never applied)."""
        with self._engine.connect() as conn:
            return _by_key(conn, key)

    def verify(self) -> list[Mismatch]:
        """Every bin whose on-hand is not the sum of its ledger rows, or not the balance of its
        newest row; empty when the ledger and on-hand agree. Reads one snapshot."""
        lg, oh = inventory_ledger.c, inventory_on_hand.c
        sums = select(lg.item_id, lg.location_id, func.sum(lg.delta).label("total"), func.max(lg.id).label("last"))
        sums = sums.group_by(lg.item_id, lg.location_id)
        with self._engine.connect() as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            ledger = {(r.item_id, r.location_id): (int(r.total), int(r.last)) for r in conn.execute(sums)}
            balances = dict(conn.execute(select(lg.id, lg.balance).where(lg.id.in_([v[1] for v in ledger.values()]))).tuples().all()) if ledger else {}
            on_hand = {(r.item_id, r.location_id): r.quantity for r in conn.execute(select(oh.item_id, oh.location_id, oh.quantity))}
        out = []
        for bin_ in sorted(ledger.keys() | on_hand.keys()):
            total, last = ledger.get(bin_, (0, None))
            balance = None if last is None else balances[last]
            have = on_hand.get(bin_)
            if (have or 0) != total or (balance is not None and balance != have):
                out.append(Mismatch(bin_[0], bin_[1], have, total, balance))
        return out


# -- many shelf readings in one transaction -----------------------------------------------------

# The hot statements go to the driver as text with its own executemany, and their rows are
# fetched from the driver's cursor: SQLAlchemy's per-row and per-IN-value parameter handling
# and its row objects cost more than the database's work (docs/performance.md, "Inventory").
# Identifiers and placeholders only; every value is a parameter (on PostgreSQL a column of values
# is one array parameter, written as its text literal by ``_pg_array``).
_SHELF_COLUMNS = ("id", "ts", "item_id", "location_id", "kind", "delta", "balance", "counted", "who", "why",
                  "idempotency_key", "leg")  # fmt: skip
_CHUNK = 1000  # values in one IN (…)


def _fetch(conn: Connection, sql: str, params: Any) -> list[Any]:
    """The rows of ``sql`` as the driver's tuples (errors are raised by ``execute``, wrapped
    as SQLAlchemy's, so the callers' retries see them)."""
    res = conn.exec_driver_sql(sql, params)
    try:
        return list(res.cursor.fetchall())
    finally:
        res.close()


def _pg_array(values: Sequence[Any]) -> str:
    """A PostgreSQL array literal of ints, floats (None: NULL) or strings: one parameter for a
    column of values (psycopg dumps a list element by element in Python, ~1.5 µs each)."""
    parts = []
    for v in values:
        if v is None:
            parts.append("NULL")
        elif isinstance(v, str):
            parts.append('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"')
        else:
            parts.append(repr(v))  # int, float (repr round-trips; PostgreSQL reads nan, inf)
    return "{" + ",".join(parts) + "}"


def _apply_shelf_batch(conn: Connection, reqs: list[_Request], *, newer_only: bool = False) -> list[Applied]:
    pg = conn.dialect.name == "postgresql"
    mark = "%s" if pg else "?"

    def marks(n: int) -> str:
        return ", ".join([mark] * n)

    def lock(bins: list[tuple[int, int]]) -> dict[tuple[int, int], list[Any]]:
        """The existing on-hand rows of ``bins``, locked in (item, location) order."""
        out = {}
        cols = "SELECT item_id, location_id, quantity, use_decayed, use_at, first_at, updated_at FROM inventory_on_hand"
        if pg:  # one statement, the bins as two arrays
            sql = (f"{cols} WHERE (item_id, location_id) IN (SELECT * FROM unnest(%s::integer[], %s::integer[])) "
                   "ORDER BY item_id, location_id FOR UPDATE")  # fmt: skip
            parts: list[tuple[str, Any]] = [(sql, (_pg_array([b[0] for b in bins]), _pg_array([b[1] for b in bins])))]
        else:
            parts = [
                (f"{cols} WHERE (item_id, location_id) IN ({', '.join(['(?, ?)'] * len(part))})",
                 tuple(v for b in part for v in b))
                for part in (bins[n : n + _CHUNK] for n in range(0, len(bins), _CHUNK))
            ]  # fmt: skip
        for sql, params in parts:
            for row in _fetch(conn, sql, params):
                out[(row[0], row[1])] = list(row[2:])
        return out

    bins = sorted({(r.item_id, r.legs[0].location_id) for r in reqs})
    state = lock(bins)  # bin -> [quantity, use_decayed, use_at, first_at, updated_at]
    missing = [b for b in bins if b not in state]
    if missing:
        # A bin's first row. (A bin with an on-hand row has its item and location: the on-hand
        # row's foreign keys; no on-hand row is ever deleted.)
        items = {b[0] for b in missing}
        places = {b[1] for b in missing}
        known_items = set(conn.execute(select(inventory_items.c.id).where(inventory_items.c.id.in_(items))).scalars())
        known_places = set(conn.execute(select(inventory_locations.c.id).where(inventory_locations.c.id.in_(places))).scalars())
        if items - known_items or places - known_places:
            what = [f"item {i}" for i in sorted(items - known_items)] + [f"location {p}" for p in sorted(places - known_places)]
            raise InventoryError(f"shelf readings: no {', '.join(what)}")
        ins: Any = pg_insert if pg else sqlite_insert
        first: dict[tuple[int, int], float] = {}
        for r in reqs:
            b = (r.item_id, r.legs[0].location_id)
            first[b] = min(r.ts, first.get(b, r.ts))
        conn.execute(
            ins(inventory_on_hand).on_conflict_do_nothing(index_elements=["item_id", "location_id"]),
            [{"item_id": i, "location_id": loc, "quantity": 0, "updated_at": first[(i, loc)],
              "first_at": first[(i, loc)]} for i, loc in missing],
        )  # fmt: skip
        state.update(lock(missing))
    # Only now (the bins locked): which keys were applied already?
    done: dict[str, tuple[Entry, ...]] = {}
    keys = list({r.key: None for r in reqs})
    cols = ", ".join(Entry.__dataclass_fields__)
    for n in range(0, len(keys), _CHUNK):
        part = keys[n : n + _CHUNK]
        sql = f"SELECT {cols} FROM inventory_ledger WHERE idempotency_key "
        sql += "= ANY(%s::varchar[]) ORDER BY leg" if pg else f"IN ({marks(len(part))}) ORDER BY leg"
        for row in _fetch(conn, sql, (_pg_array(part),) if pg else tuple(part)):
            e = Entry(*row)
            done[e.idempotency_key] = done.get(e.idempotency_key, ()) + (e,)
    results: list[Applied | tuple[str, bool]] = []  # a replay of an earlier batch, or (key, replayed)
    rows: dict[str, tuple[Any, ...]] = {}  # key -> new row (without its id)
    for req in reqs:
        prior = done.get(req.key)
        if prior is None and req.key in rows:  # repeated within this batch
            prior = (Entry(0, *rows[req.key]),)
        if prior is not None:
            if not _same(prior, req):
                raise IdempotencyConflict(
                    f"idempotency key {req.key!r} was already used for a {prior[0].kind} of item {prior[0].item_id} "
                    f"at location {prior[0].location_id} ({_amount(prior)}), not this shelf"
                )
            results.append(Applied(prior, replayed=True) if req.key in done else (req.key, True))
            continue
        b = (req.item_id, req.legs[0].location_id)
        st = state[b]
        counted = req.legs[0].counted
        assert counted is not None
        delta = counted - st[0]
        if newer_only and (req.ts < st[4] or delta == 0):
            results.append(Applied(()))
            continue
        if is_use("shelf", delta):
            st[1], st[2] = add_use(st[1], st[2], -delta, req.ts)
        st[0] = counted
        st[3] = min(st[3], req.ts)
        st[4] = max(st[4], req.ts)
        rows[req.key] = (req.ts, req.item_id, b[1], "shelf", delta, counted, counted, req.who, req.why, req.key, 0)
        results.append((req.key, False))
    entries: dict[str, Entry] = {}
    if rows:
        # Ids taken up front, ascending in the batch's order (the insert is then a plain
        # executemany, no RETURNING per row): from the sequence on PostgreSQL (one row: the ids
        # as text); on SQLite this transaction is the only writer.
        if pg:
            q = ("SELECT string_agg(v::text, ',' ORDER BY v) FROM (SELECT nextval(pg_get_serial_sequence("
                 f"'inventory_ledger', 'id')) AS v FROM generate_series(1, {len(rows)})) AS s")  # fmt: skip
            ids = [int(v) for v in _fetch(conn, q, ())[0][0].split(",")]
        else:
            top = conn.exec_driver_sql("SELECT COALESCE(MAX(id), 0) FROM inventory_ledger").scalar_one()
            ids = list(range(top + 1, top + 1 + len(rows)))
        entries = {key: Entry(id_, *row) for id_, (key, row) in zip(ids, rows.items(), strict=True)}
        new = [(e.id, *row) for e, row in zip(entries.values(), rows.values(), strict=True)]
        last_ts = {(row[1], row[2]): row[0] for row in rows.values()}  # each bin's newest row's time
        on_hand = [(state[b][0], t, state[b][1], state[b][2], state[b][3], b[0], b[1]) for b, t in last_ts.items()]
        if pg:  # one statement each, the values as arrays (executemany: a statement per row)
            conn.exec_driver_sql(
                f"INSERT INTO inventory_ledger ({', '.join(_SHELF_COLUMNS)}) SELECT * FROM unnest("
                "%s::bigint[], %s::float8[], %s::integer[], %s::integer[], %s::varchar[], %s::integer[], "
                "%s::integer[], %s::integer[], %s::text[], %s::text[], %s::varchar[], %s::integer[])",
                tuple(_pg_array(col) for col in zip(*new, strict=True)),
            )
            conn.exec_driver_sql(
                "UPDATE inventory_on_hand AS o SET quantity = v.q, updated_at = v.ts, use_decayed = v.u, "
                "use_at = v.ua, first_at = v.f FROM unnest(%s::integer[], %s::float8[], %s::float8[], "
                "%s::float8[], %s::float8[], %s::integer[], %s::integer[]) AS v(q, ts, u, ua, f, i, l) "
                "WHERE o.item_id = v.i AND o.location_id = v.l",
                tuple(_pg_array(col) for col in zip(*on_hand, strict=True)),
            )
        else:
            conn.exec_driver_sql(
                f"INSERT INTO inventory_ledger ({', '.join(_SHELF_COLUMNS)}) VALUES ({marks(len(_SHELF_COLUMNS))})", new
            )
            conn.exec_driver_sql(
                "UPDATE inventory_on_hand SET quantity = ?, updated_at = ?, use_decayed = ?, use_at = ?, "
                "first_at = ? WHERE item_id = ? AND location_id = ?",
                on_hand,
            )
    return [r if isinstance(r, Applied) else Applied((entries[r[0]],), replayed=r[1]) for r in results]


# -- one request in one transaction ------------------------------------------------------------


def _apply_in(conn: Connection, req: _Request) -> Applied:
    names = _names(conn, req)
    bins = sorted({(req.item_id, leg.location_id) for leg in req.legs})
    locked = {b: _lock_on_hand(conn, *b, req.ts) for b in bins}
    current = {b: row.quantity for b, row in locked.items()}
    # Only now (our bins locked, so a concurrent request for them has committed or waits):
    # was this key applied already?
    done = _by_key(conn, req.key)
    if done:
        if not _same(done, req):
            raise IdempotencyConflict(
                f"idempotency key {req.key!r} was already used for a {done[0].kind} of item {done[0].item_id} "
                f"at location {done[0].location_id} ({_amount(done)}), not this {req.kind}"
            )
        return Applied(done, replayed=True)
    entries = []
    for n, leg in enumerate(req.legs):
        b = (req.item_id, leg.location_id)
        have = current[b]
        if leg.counted is not None:
            delta, balance = leg.counted - have, leg.counted
        else:
            assert leg.delta is not None
            delta, balance = leg.delta, have + leg.delta
        if balance < 0:
            item, place = names[0], names[1][leg.location_id]
            what = f"{req.kind} {-delta} × {item} from {place}: only {have} on hand"
            if req.kind in ("issue", "transfer"):
                raise InsufficientStock(f"cannot {what}")
            raise InventoryError(f"{req.kind} of {delta} × {item} at {place} would leave {balance} ({have} on hand)")
        row = dict(
            ts=req.ts, item_id=req.item_id, location_id=leg.location_id, kind=req.kind, delta=delta,
            balance=balance, counted=leg.counted, who=req.who, why=req.why, idempotency_key=req.key, leg=n,
        )  # fmt: skip
        entry_id = conn.execute(insert(inventory_ledger).values(**row).returning(inventory_ledger.c.id)).scalar_one()
        oh = inventory_on_hand.c
        conn.execute(
            update(inventory_on_hand)
            .where(oh.item_id == req.item_id, oh.location_id == leg.location_id)
            .values(quantity=balance, updated_at=req.ts, **_usage(locked[b], req.kind, delta, req.ts))
        )
        current[b] = balance
        entries.append(_entry({"id": entry_id, **row}))
    return Applied(tuple(entries))


def _names(conn: Connection, req: _Request) -> tuple[str, dict[int, str]]:
    """The item's and the locations' names for messages; ``InventoryError`` if one is unknown."""
    i = conn.execute(
        select(inventory_items.c.name, inventory_items.c.sku).where(inventory_items.c.id == req.item_id)
    ).first()
    if i is None:
        raise InventoryError(f"{req.kind}: no item {req.item_id}")
    wanted = {leg.location_id for leg in req.legs}
    loc = inventory_locations.c
    places = {r.id: f"{r.name} (location {r.id})" for r in conn.execute(select(loc.id, loc.name).where(loc.id.in_(wanted)))}
    missing = sorted(wanted - places.keys())
    if missing:
        raise InventoryError(f"{req.kind} of {i.name}: no location {', '.join(map(str, missing))}")
    return f"{i.name} ({i.sku})", places


def _lock_on_hand(conn: Connection, item_id: int, location_id: int, ts: float) -> Any:
    """The bin's on-hand row (quantity and use), created (at 0) if new and locked until the
    transaction ends."""
    ins: Any = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(
        ins(inventory_on_hand)
        .values(item_id=item_id, location_id=location_id, quantity=0, updated_at=ts, first_at=ts)
        .on_conflict_do_nothing(index_elements=["item_id", "location_id"])
    )
    oh = inventory_on_hand.c
    q = select(oh.quantity, oh.use_decayed, oh.use_at, oh.first_at).where(
        oh.item_id == item_id, oh.location_id == location_id
    )
    return conn.execute(q.with_for_update()).one()


def _usage(row: Any, kind: str, delta: int, ts: float) -> dict[str, float]:
    """The on-hand row's use columns after a row of ``kind`` and ``delta`` at ``ts``
    (inventory/usage.py): its use added, its first time moved back for a back-dated row."""
    out: dict[str, float] = {}
    if is_use(kind, delta):
        out["use_decayed"], out["use_at"] = add_use(row.use_decayed, row.use_at, -delta, ts)
    if ts < row.first_at:
        out["first_at"] = ts
    return out


def _by_key(conn: Connection, key: str) -> tuple[Entry, ...]:
    c = inventory_ledger.c
    rows = conn.execute(select(inventory_ledger).where(c.idempotency_key == key).order_by(c.leg)).mappings().all()
    return tuple(_entry(r) for r in rows)


def _same(done: Sequence[Entry], req: _Request) -> bool:
    """Whether the rows ``done`` are what ``req`` would have written (its kind, item, locations
    and amounts; who, why and when may differ on a retry)."""
    if len(done) != len(req.legs) or done[0].kind != req.kind or done[0].item_id != req.item_id:
        return False
    for e, leg in zip(done, req.legs, strict=True):
        if e.location_id != leg.location_id:
            return False
        if (e.counted if leg.counted is not None else e.delta) != (leg.counted if leg.counted is not None else leg.delta):
            return False
    return True


def _amount(done: Sequence[Entry]) -> str:
    e = done[0]
    return f"counted {e.counted}" if e.counted is not None else f"{e.delta:+d}"


def _positive(what: str, quantity: int) -> None:
    if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity <= 0:
        raise InventoryError(f"{what}: the quantity must be a whole number above 0, not {quantity!r}")


def _entry(r: RowMapping | dict[str, Any]) -> Entry:
    return Entry(**{k: r[k] for k in Entry.__dataclass_fields__})


__all__ = ["KINDS", "Applied", "Entry", "Kind", "Ledger", "Mismatch", "ShelfReading"]
