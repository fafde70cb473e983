"""The sandbox: a local, faithful stand-in for the Givebutter API, on loopback only.

It answers the routes the importer uses (creating, listing, reading and deleting a contact's
activities; listing and reading contacts) as the reference pages describe them, from a
SQLite store seeded with 1,000 deterministic contacts (ids 10001-11000), and misbehaves on
demand: sliding-window rate limits with 429 + `Retry-After`, 500s, stored-then-500s, dropped
connections, latency and slow answers. It counts what it saw, for tests and benchmarks.

    async with running_sandbox(SandboxSettings(limits=(parse_window("8/1s"),))) as sandbox:
        ...  # talk to sandbox.base_url with sandbox.api_key

    with sandbox_in_thread() as sandbox:  # for synchronous callers
        ...

    serve_forever(settings, host="127.0.0.1", port=8765, on_ready=print)  # the CLI command

Modules: `settings` (what a sandbox is told, and its CLI flags), `windows` (rate limits),
`faults` (misbehaviour), `store` (SQLite), `seed` (the seeded contacts), `resources` (the
JSON shapes), `app` (routes), `stats` (what it saw), `server` (ways to run it).
"""

from importer.sandbox.faults import Faults
from importer.sandbox.seed import (
    ARCHIVED_EVERY,
    DEFAULT_CONTACT_COUNT,
    FIRST_CONTACT_ID,
    SHARED_EMAIL,
    SHARED_EMAIL_CONTACT_IDS,
    SHARED_EXTERNAL_ID,
    SHARED_EXTERNAL_ID_CONTACT_IDS,
    is_archived_seed,
    seed_store,
    seeded_contact,
    seeded_contacts,
)
from importer.sandbox.server import (
    Sandbox,
    loopback_host,
    running_sandbox,
    sandbox_in_thread,
    serve_forever,
)
from importer.sandbox.settings import (
    DEFAULT_HOST,
    DEFAULT_LIMITS,
    DEFAULT_PORT,
    SANDBOX_API_KEY,
    SandboxSettings,
    add_sandbox_arguments,
    sandbox_settings_from_args,
)
from importer.sandbox.stats import DROPPED, SandboxStats, max_in_window
from importer.sandbox.store import (
    Activity,
    Contact,
    ContactPoint,
    SandboxStore,
    StoreClosedError,
)
from importer.sandbox.windows import RateWindow, SlidingWindows, parse_window

__all__ = [
    "ARCHIVED_EVERY",
    "DEFAULT_CONTACT_COUNT",
    "DEFAULT_HOST",
    "DEFAULT_LIMITS",
    "DEFAULT_PORT",
    "DROPPED",
    "FIRST_CONTACT_ID",
    "SANDBOX_API_KEY",
    "SHARED_EMAIL",
    "SHARED_EMAIL_CONTACT_IDS",
    "SHARED_EXTERNAL_ID",
    "SHARED_EXTERNAL_ID_CONTACT_IDS",
    "Activity",
    "Contact",
    "ContactPoint",
    "Faults",
    "RateWindow",
    "Sandbox",
    "SandboxSettings",
    "SandboxStats",
    "SandboxStore",
    "SlidingWindows",
    "StoreClosedError",
    "add_sandbox_arguments",
    "is_archived_seed",
    "loopback_host",
    "max_in_window",
    "parse_window",
    "running_sandbox",
    "sandbox_in_thread",
    "sandbox_settings_from_args",
    "seed_store",
    "seeded_contact",
    "seeded_contacts",
    "serve_forever",
]
