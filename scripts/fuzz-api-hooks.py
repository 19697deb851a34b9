"""Schemathesis hooks of scripts/fuzz-api: the relations between fields that a JSON Schema
cannot state, and that the document states in words, applied to generated bodies and
query strings.

Each hook only touches a body that has the documented shape; a body generated to break the
schema is left as it is, so the negative cases stay negative.
"""

import base64
import json
import re
from datetime import datetime, timedelta, timezone

import schemathesis


def _instant(text):
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except (AttributeError, TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else None


def _ordered_range(body):
    """A replay range's `from` is before its `to`, starts no later than now, ends at most 5
    minutes from now and covers at most 7 days (docs/api.md: the bounds of a range replay)."""
    start, end = _instant(body.get("from")), _instant(body.get("to"))
    if start is None or end is None:
        return body
    now = datetime.now(timezone.utc)
    try:
        if start > end:
            start, end = end, start
        if start > now:
            start, end = now - timedelta(hours=1), now
        if end > now:
            end = now
        if end - start > timedelta(days=7):
            start = end - timedelta(days=7)
        if start >= end:
            start = end - timedelta(seconds=1)
    except OverflowError:
        start, end = now - timedelta(hours=1), now
    body["from"], body["to"] = start.isoformat(), end.isoformat()
    return body


def _distinct_columns(body):
    """Each typed column is fed by one source column, never by the id column."""
    columns = body.get("columns")
    if not isinstance(columns, dict) or not all(isinstance(v, str) for v in columns.values()):
        return body
    fed, kept = set(), {}
    for source, typed in columns.items():
        if typed in fed or source == body.get("id_column"):
            continue
        fed.add(typed)
        kept[source] = typed
    body["columns"] = kept
    return body


# The longest range a series may cover at each step (the store's `Step::max_range`).
_SERIES_MAX_RANGE = {
    "1m": timedelta(days=1),
    "5m": timedelta(days=7),
    "1h": timedelta(days=90),
    "1d": timedelta(days=5 * 366),
}


def _series_range(query):
    """A series' `to` is after its `from`, within the longest range of its step."""
    start, end = _instant(query.get("from")), _instant(query.get("to"))
    if (query.get("from") is not None and start is None) or (
        query.get("to") is not None and end is None
    ):
        return query
    step = query.get("step")
    if step is not None and not isinstance(step, str):
        return query
    longest = _SERIES_MAX_RANGE.get(step, _SERIES_MAX_RANGE["1d"])
    try:
        if start is None and end is None:
            return query
        if start is None:
            start = end - timedelta(hours=1)
        if end is None:
            end = start + timedelta(hours=1)
        if start > end:
            start, end = end, start
        if end - start > longest:
            end = start + longest
        if end == start:
            end = start + timedelta(minutes=1)
    except OverflowError:
        start, end = datetime(2026, 1, 1, tzinfo=end.tzinfo if end else start.tzinfo), None
        end = start + timedelta(hours=1)
    query["from"], query["to"] = start.isoformat(), end.isoformat()
    return query


def _history_range(query):
    """A status history's `to` is after its `from` and at most 7 days after it (the history
    kept); a missing `to` (the server's default: now) is an hour after `from`."""
    start, end = _instant(query.get("from")), _instant(query.get("to"))
    if start is None:
        return query
    try:
        if end is None:
            end = start + timedelta(hours=1)
        if start > end:
            start, end = end, start
        if end - start > timedelta(days=7):
            start = end - timedelta(days=7)
        if end == start:
            start = end - timedelta(minutes=1)
    except OverflowError:
        return query
    query["from"], query["to"] = start.isoformat(), end.isoformat()
    return query


def _letter_selection(body):
    """A dead-letter replay chooses something (docs/api.md): `all`, or at least one of
    `reason`, `table`, `ids` and a window; a window has both bounds, `from` before `to`."""
    start, end = _instant(body.get("from")), _instant(body.get("to"))
    if (start is None) != (end is None):
        body.pop("from", None)
        body.pop("to", None)
    if not any(body.get(field) is not None for field in ("reason", "table", "ids", "from")):
        if body.get("all") is not True:
            return {"all": True}
        return body
    if start is None or end is None:
        return body
    try:
        if start > end:
            start, end = end, start
        if start == end:
            start = end - timedelta(seconds=1)
    except OverflowError:
        return body
    body["from"], body["to"] = start.isoformat(), end.isoformat()
    return body


_CURSOR = re.compile(r"^[A-Za-z0-9_-]{1,2000}$")


def _list_cursor(query):
    """A list's `cursor` is one the server wrote: opaque text of the documented shape is made
    into a cursor of the same order (after an id), as a client passing `next_cursor` back does."""
    cursor = query.get("cursor")
    if not isinstance(cursor, str) or not _CURSOR.match(cursor):
        return query
    position = {
        "s": query.get("sort") or "id",
        "d": query.get("order") == "desc",
        "v": None,
        "id": cursor[:100],
    }
    text = json.dumps(position, separators=(",", ":")).encode()
    query["cursor"] = base64.urlsafe_b64encode(text).decode().rstrip("=")
    return query


@schemathesis.hook
def map_case(context, case):
    """Every phase's cases (the coverage phase applies case hooks, not body hooks)."""
    method, path = case.operation.method.lower(), case.operation.path
    if method == "get" and path == "/api/v1/analytics/series" and isinstance(case.query, dict):
        case.query = _series_range(case.query)
    elif method == "get" and path.startswith("/api/v1/analytics/") and isinstance(case.query, dict):
        case.query = _list_cursor(case.query)
    elif method == "get" and path.endswith("/status-history") and isinstance(case.query, dict):
        case.query = _history_range(case.query)
    body = case.body
    if not isinstance(body, dict):
        return case
    if method == "post" and path == "/api/v1/replays" and body.get("kind") == "range":
        case.body = _ordered_range(body)
    elif method == "post" and path.endswith("/dead-letters/replay"):
        case.body = _letter_selection(body)
    elif method == "put" and path.endswith("/mappings/{table}"):
        case.body = _distinct_columns(body)
    return case
