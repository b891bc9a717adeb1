"""Encoded list pages kept between requests: the device and alert lists that every ward PC and
tablet polls are built and encoded once per change, not once per request.

An entry is the response body of one list request (its route and query). It is dropped at once
when something the lists show changes *as an event*: an alert raised, changed, acknowledged,
silenced or resolved, a device's status, a silence or maintenance window (``changed()``, called
by MonitorState's live-update hooks and the silences routes). Readings arrive many times a
second and do not drop entries: a served page may be up to ``ttl`` seconds behind on readings
and their ages (``age_s``) — never on alerts or statuses. Bounded: at most ``max_entries``
pages (the oldest dropped first). Used only on the service's event loop (no locks).

Why (docs/performance.md, API): building and encoding a page of 100 devices takes ~1.5 ms of
the loop, and the lists are the bulk of a dashboard's requests.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable


class ViewCache:
    def __init__(self, ttl: float = 1.0, max_entries: int = 256, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._pages: OrderedDict[Hashable, tuple[float, bytes]] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.generation = 0  # counts changed(): a page built across a change is not kept

    def changed(self) -> None:
        """Something the lists show changed (not a reading): every page is built afresh."""
        self._pages.clear()
        self.generation += 1

    def get(self, key: Hashable) -> bytes | None:
        hit = self._pages.get(key)
        if hit is not None and self.clock() - hit[0] < self.ttl:
            self.hits += 1
            return hit[1]
        self.misses += 1
        return None

    def put(self, key: Hashable, body: bytes, generation: int | None = None) -> None:
        """Keep ``body``; ``generation``: the cache's ``generation`` when the page was begun
        (built off the loop): not kept if something changed since."""
        if generation is not None and generation != self.generation:
            return
        self._pages[key] = (self.clock(), body)
        self._pages.move_to_end(key)
        while len(self._pages) > self.max_entries:
            self._pages.popitem(last=False)
