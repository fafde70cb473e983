"""Request rates from the arrival times the sandbox recorded.

Rates are measured where the requests land, on the sandbox's clock, the same way for the
importer and for its reference: the start-up of a process, reading the file and mapping
it are not part of a send rate.
"""

from __future__ import annotations

from collections.abc import Sequence


def closed_loop_rate(times: Sequence[float], in_flight: int) -> float:
    """Requests per second of a client keeping `in_flight` requests out at once.

    Its first `in_flight` requests arrive together at the start; every later one follows
    an answer. So the rate is the requests after the first `in_flight`, over the time from
    the first arrival to the last: exact for waves (latency-bound), and within
    `in_flight / len(times)` of the plain count for a steady stream.
    """
    if len(times) <= in_flight:
        return 0.0
    span = times[-1] - times[0]
    return (len(times) - in_flight) / span if span > 0 else 0.0


def spaced_rate(times: Sequence[float]) -> float:
    """Requests per second of a stream spaced by a rate limit: gaps per second."""
    if len(times) < 2:
        return 0.0
    span = times[-1] - times[0]
    return (len(times) - 1) / span if span > 0 else 0.0
