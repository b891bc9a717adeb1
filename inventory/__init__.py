"""Inventory: supply items, locations, par settings per item and location, and the stock
ledger, on the state database (eqmon/db/, tables ``inventory_*``). docs/inventory.md.

Built so far:

* ``catalog.py`` — ``Catalog``: items, locations (a tree), bins (par settings, tare, shelf)
* ``ledger.py``  — ``Ledger``: receipts, issues, transfers, counts, adjustments and shelf counts,
  idempotent by key, on-hand kept in the same transaction, ``verify()``
* ``shelf.py``   — a bin's weight -> count, flagged when negative, unexplained or unstable
* ``usage.py``   — consumption: exponentially weighted use (half-life one day) kept per bin
* ``status.py``  — ``bin_statuses``: level, use per day, days of supply, predicted stock-out
* ``stock_alerts.py`` — ``stock_conditions``: one alert condition per bin, its text and severity
* ``picklist.py`` — ``pick_list``: what to bring where, in whole packs, by urgency; JSON, CSV
* ``setup.py``   — ``apply_site_inventory``: the site file's ``inventory:`` into the catalog
* ``csvio.py``   — CSV import (all or nothing, every bad row) and export of items, locations, bins
* ``feed.py``    — ``ShelfFeed``: the shelves' readings -> counts in the ledger (batched),
  anomalies counted and not applied, drift -> a recalibrate condition
* ``queries.py`` — the API's reads: keyset pages of items, locations, bin statuses and ledger
  rows, one room's status (dashboard_api/routers/inventory.py; docs/api.md, "Inventory")
* ``errors.py``  — ``InventoryError``, ``InsufficientStock``, ``IdempotencyConflict``
"""
