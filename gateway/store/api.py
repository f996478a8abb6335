"""`Store`: the typed API over the database, used by the CLI, the web pages and the services.

Every method is one transaction and returns frozen records (`records.py`), never ORM objects,
so a caller can keep what it got after the session is gone. Refusals are `StoreError`s with a
one-line message; see `base.py` for the write lock and the version row, `users.py` for the
directory (users, addresses, managed domains, aliases), `tags.py` for fixed tags and the
blacklist, `events.py` for events.
"""

from __future__ import annotations

from .events import EventsMixin
from .tags import TagsMixin


class Store(TagsMixin, EventsMixin):
    """The store. `Store.open(url)` connects; `Store.upgrade(url)` creates or upgrades the schema."""
