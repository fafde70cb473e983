"""Reasons by kind: how the summary groups 580 rows' reasons into one line.

A row's reason names what made it particular ("no contact with external_id EXT-92").
`kind_of(reason)` gives the reason with that value taken out ("no contact with that
external_id") and the value ("EXT-92"), so that the summary can say
`580 × no contact with that external_id (e.g. EXT-92, row 14)`.

The reasons worded with a value are the resolver's (`importer.resolve`) and the mapper's
(a quoted cell: `occurred_at ('x') does not match ...`); any other reason is its own kind,
with no value. A value is whatever the wording puts in its place, spaces included.
"""

from __future__ import annotations

import re

_KEY = r"(?P<key>email|external_id)"
_VALUE = r"(?P<value>.+?)"
# (pattern, kind) in the order tried; the kind may use the pattern's groups.
_KINDS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), kind)
    for pattern, kind in (
        (
            rf"^no contact with {_KEY} {_VALUE}(?P<rest>(?: \(the mapping.*|, and none.*)?)$",
            "no contact with that {key}{rest}",
        ),
        (
            rf"^\d+ contacts share {_KEY} {_VALUE} \(ids [^)]*\)$",
            "several contacts share that {key}",
        ),
        (
            rf"^contact \d+ \({_KEY} {_VALUE}\) is archived$",
            "the contact with that {key} is archived",
        ),
        (rf"^email {_VALUE} is not an email address$", "an email that is not an email address"),
        (
            rf"^could not (?P<what>look up|create a contact for) email {_VALUE}: (?P<rest>.*)$",
            "could not {what} an email: {rest}",
        ),
        (rf"^email {_VALUE}: (?P<rest>the API listed more than .*)$", "an email: {rest}"),
        (
            rf"^contact {_VALUE} is not a contact id (?P<rest>.*)$",
            "a contact that is not a contact id {rest}",
        ),
        (r"^(?P<head>.*?)\('(?P<value>.*?)'\)\s*(?P<rest>.*)$", "{head}{rest}"),
    )
)


def kind_of(reason: str) -> tuple[str, str]:
    """The reason's kind, and the value taken out of it ('' if none)."""
    for pattern, kind in _KINDS:
        found = pattern.match(reason)
        if found is not None:
            groups = {name: text or "" for name, text in found.groupdict().items()}
            return kind.format(**groups), groups.get("value", "")
    return reason, ""


def example(value: str, row: int | None) -> str:
    """How one row of a kind is shown: `EXT-92, row 14`, or `row 14` without a value, or
    `EXT-92` for a line of no input row (a key deleted from the source)."""
    where = f"row {row}" if row is not None else ""
    return ", ".join(part for part in (value, where) if part) or "no row"
