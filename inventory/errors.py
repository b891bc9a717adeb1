"""The inventory's errors: one line each, naming the item, the location and the numbers."""

from __future__ import annotations


class InventoryError(ValueError):
    """A request the inventory refuses (nothing was changed)."""


class InsufficientStock(InventoryError):
    """An issue or transfer asks for more than is on hand."""


class IdempotencyConflict(InventoryError):
    """An idempotency key already applied to a different request."""
