"""The sandbox's seeded contacts: the same people, with the same ids, every time.

By default 1,000 contacts with ids 10001 to 11000. The n-th (n from 1, id 10000 + n) has:

- a first and last name from the lists below (some with accents or an apostrophe; names
  repeat, as they do in a real database);
- a primary email `firstname.lastname.<id>@example.org`, lower-case ASCII, unique;
- every 4th: a second, mixed-case work email `FirstLast<id>@Work.Example.com`;
- every contact not divisible by 3: a phone `+1555<n, 7 digits>`;
- `external_id` `CRM-<n, 6 digits>`; every 10th also `external_ids` `["LEGACY-<n, 5 digits>"]`;
- every 50th (ids 10050, 10100, ...): archived (`archived_at` set); creating an activity for
  it answers 403.

Two deliberate ambiguities, for resolution tests (present when at least 32 are seeded):

- `SHARED_EMAIL` is an extra email of both contacts `SHARED_EMAIL_CONTACT_IDS` (10011, 10012);
- `SHARED_EXTERNAL_ID` ("CRM-000031") is the `external_id` of both contacts
  `SHARED_EXTERNAL_ID_CONTACT_IDS` (10031, 10032), as if the old CRM had a double entry;
  so no contact has "CRM-000032".
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from importer.sandbox.store import Contact, ContactPoint, SandboxStore, moment_text

FIRST_CONTACT_ID = 10001
DEFAULT_CONTACT_COUNT = 1000
ARCHIVED_EVERY = 50
SHARED_EMAIL = "household.shared@example.org"
SHARED_EMAIL_CONTACT_IDS = (10011, 10012)
SHARED_EXTERNAL_ID = "CRM-000031"
SHARED_EXTERNAL_ID_CONTACT_IDS = (10031, 10032)
SEED_EPOCH = datetime(2023, 1, 2, 15, 0, tzinfo=UTC)

FIRST_NAMES = (
    "Maria", "James", "Aisha", "Chen", "Olivia", "Diego", "Fatima", "Liam", "Sofia", "Noah",
    "Hana", "Mateo", "Zoë", "Kwame", "Ingrid", "Ravi", "Grace", "Tomás", "Amara", "Lucas",
    "Yuki", "Elena", "Omar", "Chloé", "Samuel", "Priya", "Jonas", "Leila", "Ethan", "Nadia",
    "Björn", "Mei", "Daniel", "Camila", "Kofi", "Emma", "Arjun", "Sara", "Felix", "Ana",
)  # fmt: skip
LAST_NAMES = (
    "Garcia", "Smith", "Okafor", "Wang", "Johnson", "Hernández", "Khan", "Brown", "Rossi",
    "Müller", "Nakamura", "Silva", "O'Brien", "Mensah", "Larsen", "Patel", "Nguyen", "Kim",
    "Cohen", "Dubois", "Kowalski", "Ahmed", "Lopez", "Andersson", "Murphy", "Novak",
    "Santos", "Fischer", "Ivanova", "Tanaka", "Walker", "Moreau", "Haddad", "Jensen",
    "Reyes", "Byrne", "Costa", "Lindqvist", "Adeyemi", "Schmidt", "Yilmaz",
)  # fmt: skip


def seed_store(store: SandboxStore, count: int = DEFAULT_CONTACT_COUNT) -> int:
    """Add the first `count` seeded contacts to a store that has no contacts yet; a store
    that has some (a file from an earlier run) is left alone. Give how many were added.

    The rows are made straight from the numbers (`seeded_rows`), not through `Contact`
    objects: 50,000 contacts take about a second rather than five."""
    if store.count_contacts() > 0:
        return 0
    return store.add_rows(seeded_rows(count, with_ambiguities=count >= 32))


def seeded_contacts(count: int = DEFAULT_CONTACT_COUNT) -> Iterator[Contact]:
    """The first `count` seeded contacts, in id order."""
    for n in range(1, count + 1):
        yield seeded_contact(n, with_ambiguities=count >= 32)


def seeded_contact(n: int, *, with_ambiguities: bool = True) -> Contact:
    """The n-th seeded contact (n from 1; its id is 10000 + n)."""
    contact_id = FIRST_CONTACT_ID + n - 1
    first = FIRST_NAMES[(n - 1) % len(FIRST_NAMES)]
    last = LAST_NAMES[(n - 1) * 7 % len(LAST_NAMES)]
    emails = [ContactPoint("personal", f"{_ascii(first)}.{_ascii(last)}.{contact_id}@example.org")]
    if n % 4 == 0:
        work = f"{_ascii(first, lower=False)}{_ascii(last, lower=False)}{contact_id}"
        emails.append(ContactPoint("work", f"{work}@Work.Example.com"))
    external_id = f"CRM-{n:06d}"
    if with_ambiguities and contact_id in SHARED_EMAIL_CONTACT_IDS:
        emails.append(ContactPoint("other", SHARED_EMAIL))
    if with_ambiguities and contact_id == SHARED_EXTERNAL_ID_CONTACT_IDS[1]:
        external_id = SHARED_EXTERNAL_ID
    created = SEED_EPOCH + timedelta(minutes=n)
    archived = created + timedelta(days=30) if n % ARCHIVED_EVERY == 0 else None
    return Contact(
        id=contact_id,
        first_name=first,
        last_name=last,
        emails=tuple(emails),
        phones=(ContactPoint("cell", f"+1555{n:07d}"),) if n % 3 else (),
        external_id=external_id,
        external_ids=(f"LEGACY-{n:05d}",) if n % 10 == 0 else (),
        archived_at=archived,
        created_at=created,
        updated_at=archived or created,
    )


def seeded_rows(
    count: int, *, with_ambiguities: bool = True
) -> Iterator[tuple[tuple[Any, ...], list[str]]]:
    """The first `count` seeded contacts as the store's rows (its `contacts` row and the
    lower-cased emails), equal to `seeded_contact(n)` stored (a test holds them to it)."""
    for n in range(1, count + 1):
        contact_id = FIRST_CONTACT_ID + n - 1
        if with_ambiguities and contact_id in _AMBIGUOUS_IDS:
            contact = seeded_contact(n, with_ambiguities=True)  # the odd few: the slow way
            yield SandboxStore.row_of(contact), [e.value.lower() for e in contact.emails]
            continue
        first = FIRST_NAMES[(n - 1) % len(FIRST_NAMES)]
        last = LAST_NAMES[(n - 1) * 7 % len(LAST_NAMES)]
        personal = f"{_ascii(first)}.{_ascii(last)}.{contact_id}@example.org"
        emails = [("personal", personal)]
        if n % 4 == 0:
            work = f"{_ascii(first, lower=False)}{_ascii(last, lower=False)}{contact_id}"
            emails.append(("work", f"{work}@Work.Example.com"))
        created = _seed_time(n)
        archived = _seed_time(n, days=30) if n % ARCHIVED_EVERY == 0 else None
        phones = f'[{{"type": "cell", "value": "+1555{n:07d}"}}]' if n % 3 else "[]"
        row = (
            contact_id,
            first,
            last,
            # The addresses are ASCII letters, digits, dots and @: JSON by hand is safe here.
            "[" + ", ".join(f'{{"type": "{k}", "value": "{v}"}}' for k, v in emails) + "]",
            phones,
            f"CRM-{n:06d}",
            f'["LEGACY-{n:05d}"]' if n % 10 == 0 else "[]",
            archived,
            created,
            archived or created,
        )
        yield row, [value.lower() for _, value in emails]


_AMBIGUOUS_IDS = frozenset((*SHARED_EMAIL_CONTACT_IDS, SHARED_EXTERNAL_ID_CONTACT_IDS[1]))


def _seed_time(n: int, *, days: int = 0) -> str:
    """The store's text of SEED_EPOCH + n minutes (+ days)."""
    return moment_text(SEED_EPOCH + timedelta(days=days, minutes=n))


def is_archived_seed(contact_id: int) -> bool:
    """Whether a seeded contact id is one of the archived ones (every 50th)."""
    return (contact_id - FIRST_CONTACT_ID + 1) % ARCHIVED_EVERY == 0


@functools.cache
def _ascii(name: str, *, lower: bool = True) -> str:
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    letters = "".join(ch for ch in folded if ch.isalpha())
    return letters.lower() if lower else letters
