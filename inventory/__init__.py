"""Inventory: supply items, locations, par settings per item and location, and the stock
ledger, on the state database (eqmon/db/, tables ``inventory_*``). docs/inventory.md.

Built so far:

* ``catalog.py`` — ``Catalog``: items, locations (a tree), bins (par settings, tare, shelf)
* ``ledger.py``  — ``Ledger``: receipts, issues, transfers, counts, adjustments and shelf counts,
  idempotent by key, on-hand kept in the same transaction, ``verify()``
* ``shelf.py``   — a bin's weight -> count, flagged when negative, unexplained or unstable
* ``errors.py``  — ``InventoryError``, ``InsufficientStock``, ``IdempotencyConflict``

Not built yet (issue 10): the site file's ``inventory:`` section and CSV import/export, feeding
shelf readings from the bus into the ledger, stock status, consumption and forecasts, stock
alerts, the pick list, the API and CLI, the simulators' shelves.
"""
