"""What one sending run has in the air and has been given (`importer.claims`)."""

from importer.claims import RunClaims
from importer.payload import ActivityPayload
from importer.recover import CLOCK_SKEW, Claims, Sought

NOTE = ActivityPayload(type="note", note="hello")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sought(row: int, contact: int = 42) -> Sought:
    return Sought(contact, NOTE, None, row)


def test_rows_out_and_in_doubt_and_ids_given_are_claims_for_the_same_contact_only():
    run = RunClaims()
    out, done, doubtful, me = sought(2), sought(3), sought(4), sought(5)
    run.start(out)
    run.end(run.start(done), activity_id="a1", in_doubt=False)
    run.end(run.start(doubtful), activity_id=None, in_doubt=True)
    claims = run.claims(me, Claims(ids=frozenset({"z9"})))
    assert claims.ids == {"a1", "z9"}
    assert claims.in_flight == (out,) and claims.in_doubt == (doubtful,)
    assert run.claims(sought(6, contact=7)) == Claims()


def test_a_search_never_counts_the_sought_row_or_its_own_request():
    run = RunClaims()
    me = sought(2)
    ticket = run.start(me)
    assert run.claims(me, ticket=ticket).in_flight == ()


def test_a_settled_row_is_no_longer_in_doubt():
    run = RunClaims()
    doubtful = sought(3)
    run.end(run.start(doubtful), activity_id=None, in_doubt=True)
    run.settled(doubtful)
    assert run.claims(sought(4)).in_doubt == ()


def test_ids_are_let_go_once_no_search_can_see_them():
    clock = Clock()
    run = RunClaims(clock)
    run.end(run.start(sought(2)), activity_id="a1", in_doubt=False)
    long_out = run.start(sought(3))  # a request out since now keeps a1 in sight
    clock.now += 3 * CLOCK_SKEW.total_seconds()
    run.end(run.start(sought(4)), activity_id="a2", in_doubt=False)
    assert run.claims(sought(5)).ids == {"a1", "a2"}
    run.end(long_out, activity_id=None, in_doubt=False)
    assert run.claims(sought(5)).ids == {"a2"}


def test_ids_the_caller_keeps_are_not_kept_again_but_ids_found_are():
    run = RunClaims()
    run.ids_kept_by_caller = True  # a delivery with a ledger: its claims hold its results
    run.end(run.start(sought(2)), activity_id="a1", in_doubt=False)
    run.give(42, "a2")  # found by a look: the caller records it only after marking the row
    assert run.claims(sought(3)).ids == {"a2"}
