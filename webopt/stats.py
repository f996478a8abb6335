"""Forgery statistics for the pages: event counts from the store turned into charts.

Events are recorded by the verification service (gateway/store/events.py). A rejection happens
in full mode and a warning header in testing mode (seed 003, "Testing mode"), so the kind of an
event is also the mode it was decided under.
"""

from __future__ import annotations

import datetime as dt

from gateway.store import EventCount, EventKind, Store

from .charts import Chart, day_range, group_counts, stacked_bars

KIND_LABELS = {
    EventKind.REJECT: "rejected (full mode)",
    EventKind.WARN: "flagged (testing mode)",
    EventKind.MALFORMED_BOUNCE: "malformed bounce",
    EventKind.DEFER: "deferred (temporary failure)",
}
#: What a user sees as forgeries against them; a deferral is our own trouble, not a forgery.
FORGERY_KINDS = (EventKind.REJECT, EventKind.WARN, EventKind.MALFORMED_BOUNCE)
REASON_LABELS = {
    "unsigned": "no signature",
    "bad_mac": "wrong signature",
    "unknown_key": "unknown key",
    "expired": "expired signature",
    "from_future": "signature from the future",
    "malformed": "malformed signature",
    "too_long": "address too long",
    "wrong_purpose": "header token used as sender",
    "blacklisted": "leaked (blacklisted) signature",
    "revoked": "revoked fixed address",
    "wrong_user": "fixed address of someone else",
}
MAX_DAYS = 366


def reason_label(reason: str) -> str:
    return REASON_LABELS.get(reason, reason.replace("_", " "))


def _counts(store: Store, today: dt.date, days: int, user: str | None) -> list[EventCount]:
    since = dt.datetime.combine(today - dt.timedelta(days=days - 1), dt.time(), dt.UTC)
    return store.event_counts(since, user=user)


def today(now: float) -> dt.date:
    return dt.datetime.fromtimestamp(now, dt.UTC).date()


def forgeries_of(store: Store, login: str, now: float, days: int = 30) -> Chart:
    """One user's forgeries per day, by what was done about them."""
    last = today(now)
    counts = [c for c in _counts(store, last, days, login) if c.kind in FORGERY_KINDS]
    span = day_range(last, days)
    grouped = group_counts(counts, span, lambda c: KIND_LABELS[c.kind], [KIND_LABELS[k] for k in FORGERY_KINDS])
    return stacked_bars(f"Forgeries per day, last {days} days", span, grouped, "forgeries")


def site_statistics(store: Store, now: float, days: int = 30) -> tuple[Chart, Chart, list[tuple[str, list[int]]]]:
    """All events per day by mode (kind) and by reason, and a table: reason, counts per FORGERY_KINDS."""
    last = today(now)
    counts = _counts(store, last, days, None)
    span = day_range(last, days)
    by_kind = group_counts(counts, span, lambda c: KIND_LABELS[c.kind], list(KIND_LABELS.values()))
    forgeries = [c for c in counts if c.kind in FORGERY_KINDS]
    by_reason = group_counts(forgeries, span, lambda c: reason_label(c.reason))
    table: dict[str, list[int]] = {}
    for count in forgeries:
        table.setdefault(reason_label(count.reason), [0] * len(FORGERY_KINDS))[FORGERY_KINDS.index(count.kind)] += (
            count.count
        )
    rows = sorted(table.items(), key=lambda row: (-sum(row[1]), row[0]))
    return (
        stacked_bars(f"Events per day by mode, last {days} days", span, by_kind, "by-mode"),
        stacked_bars(f"Forgeries per day by reason, last {days} days", span, by_reason, "by-reason"),
        rows,
    )
