"""Schemathesis hooks of scripts/fuzz-api: the relations between fields that a JSON Schema
cannot state, and that the document states in words, applied to generated bodies.

Each hook only touches a body that has the documented shape; a body generated to break the
schema is left as it is, so the negative cases stay negative.
"""

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


@schemathesis.hook
def map_case(context, case):
    """Every phase's cases (the coverage phase applies case hooks, not body hooks)."""
    body = case.body
    if not isinstance(body, dict):
        return case
    method, path = case.operation.method.lower(), case.operation.path
    if method == "post" and path == "/api/v1/replays" and body.get("kind") == "range":
        case.body = _ordered_range(body)
    elif method == "put" and path.endswith("/mappings/{table}"):
        case.body = _distinct_columns(body)
    return case
