"""Inventory: supply items, par levels per location, stock from smart shelves and counts.

Not built yet (a later issue); smart-shelf readings already flow through the collectors."""
