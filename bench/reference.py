"""The reference for sending: the least a client can do to post the same bodies.

`request_bodies(input, mapping)` turns a file into the exact `(contact id, JSON body)` pairs
the importer would post (through the importer's own reader and mapper, before any timing).
`post_all(...)` then posts them with a minimal aiohttp loop: `concurrency` workers on one
session, each taking the next body and posting it, reading the answer and nothing more: no
rate limit, no retries, no results file. The suite runs it in a fresh process
(`python -m bench.child post ...`), as the importer runs in one.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from importer.decide import decide_rows
from importer.mapper import Mapper
from importer.mapping import load_mapping
from importer.read import SourceOptions, open_table
from importer.records import Status

RequestBody = tuple[int, dict[str, Any]]


def request_bodies(input_path: Path, mapping_path: Path) -> list[RequestBody]:
    """The contact id and JSON body of every row the importer would send, in file order."""
    mapping = load_mapping(mapping_path)
    source = mapping.source
    table = open_table(
        input_path,
        SourceOptions(
            encoding=source.encoding,
            delimiter=source.delimiter,
            sheet=source.sheet,
            header_row=source.header_row,
        ),
    )
    mapper = Mapper(mapping)
    bodies = []
    for chunk in table.chunks():
        for outcome in decide_rows(mapper.map_columns(chunk)):
            if outcome.status is Status.VALID and outcome.payload is not None:
                assert outcome.contact_id is not None
                bodies.append((outcome.contact_id, outcome.payload.to_body()))
    return bodies


async def post_all(
    base_url: str, api_key: str, bodies: list[RequestBody], concurrency: int
) -> Counter[int]:
    """POST every body to `base_url/contacts/{id}/activities` with `concurrency` workers;
    give how many answers came with each status."""
    statuses: Counter[int] = Counter()
    pending = iter(bodies)  # shared by the workers: each body is taken once
    headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            for contact_id, body in pending:
                url = f"{base_url}/contacts/{contact_id}/activities"
                async with session.post(url, json=body) as answer:
                    await answer.read()
                    statuses[answer.status] += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return statuses
