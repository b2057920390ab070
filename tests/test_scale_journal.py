"""The thread journal (voicestack/scale/journal.py): every thread event in JetStream, so that a
client resuming on an edge that has not followed its thread is caught up there, and never
across a hole.

Real processes: nats-server with JetStream, one primary, two edges. The holes are made in the
real journal with the JetStream API, as a lost publish would leave them.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import nats
import pytest
from nats.js.errors import NotFoundError

from tests.support.scale import (
    Cluster,
    client,
    events_after,
    new_thread,
    resume_counted,
    running_cluster,
)
from voicestack.scale.journal import (
    EVENT_HEADER,
    STREAM,
    JournalEvent,
    journal_subject,
    whole_run,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("journal")) as started:
        yield started


def test_a_run_follows_prev_back_from_the_newest_event() -> None:
    events = [JournalEvent(5, 2, b"e5"), JournalEvent(9, 5, b"e9"), JournalEvent(12, 9, b"e12")]
    assert whole_run(events, 12) == (2, events)
    # Duplicates (two primaries publishing alike) and order do not matter.
    assert whole_run([*reversed(events), events[1]], 12) == (2, events)


def test_a_run_stops_at_a_hole_and_never_loops() -> None:
    # Event 5 is missing: the run that ends at 12 begins after it.
    events = [JournalEvent(2, 0, b"e2"), JournalEvent(9, 5, b"e9"), JournalEvent(12, 9, b"e12")]
    assert whole_run(events, 12) == (5, events[1:])
    assert whole_run(events, 13) is None  # the newest event is not in the journal
    assert whole_run([JournalEvent(7, 7, b"bad")], 7) is None


async def _journal_of(cluster: Cluster, thread_id: str) -> list[tuple[int, int]]:
    """(stream sequence, event id) of each journalled event of the thread."""
    nc = await nats.connect(cluster.nats.url)
    try:
        js = nc.jetstream()
        subject = journal_subject(thread_id)
        assert subject is not None
        try:
            sub = await js.subscribe(subject, stream=STREAM, ordered_consumer=True)
        except NotFoundError:  # no journal (yet)
            return []
        found = []
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except TimeoutError:
                return found
            assert msg.headers is not None
            found.append((msg.metadata.sequence.stream, int(msg.headers[EVENT_HEADER])))
    finally:
        await nc.close()


async def _drop_from_journal(cluster: Cluster, seq: int) -> None:
    nc = await nats.connect(cluster.nats.url)
    try:
        assert await nc.jetstream().delete_msg(STREAM, seq)
    finally:
        await nc.close()


async def _thread_with_messages(http: httpx.AsyncClient, title: str, count: int) -> str:
    thread_id = await new_thread(http, title)
    for n in range(count):
        response = await http.post(f"/api/threads/{thread_id}/messages", json={"text": f"m{n}"})
        assert response.status_code in (200, 201), response.text
    return thread_id


async def _journalled(
    cluster: Cluster, http: httpx.AsyncClient, title: str, count: int
) -> tuple[str, list[tuple[int, str]], list[tuple[int, int]]]:
    """A thread with `count` messages: its id, its events (id, data) as the primary has them,
    and (stream sequence, event id) of each one in the journal."""
    thread_id = await _thread_with_messages(http, title, count)
    everything = await events_after(cluster, cluster.token, thread_id, 0)
    return thread_id, everything, await _journal_of(cluster, thread_id)


async def _journal_events(http: httpx.AsyncClient) -> int:
    count: int = (await http.get("/healthz")).json()["feedJournalEvents"]
    return count


async def test_a_client_resuming_where_no_one_follows_its_thread_is_replayed_from_the_journal(
    cluster: Cluster,
) -> None:
    first, second = cluster.edges
    async with client(first.url, cluster.token) as a, client(second.url, cluster.token) as b:
        thread_id, everything, journal = await _journalled(cluster, a, "replayed", 4)
        assert [event_id for _, event_id in journal] == [event_id for event_id, _ in everything]
        # The client saw the first message, on an edge that died; edge two never followed the
        # thread.
        cursor = everything[0][0]
        before = await _journal_events(b)
        path = f"/api/threads/{thread_id}/events"
        got, resumes = await resume_counted(b, path, str(cursor), len(everything) - 1)
        assert got == everything[1:]
        assert resumes == 1  # caught up by the edge, not by the primary
        assert await _journal_events(b) - before == len(everything)


async def test_a_hole_in_the_journal_is_never_replayed_across(cluster: Cluster) -> None:
    first, second = cluster.edges
    async with client(first.url, cluster.token) as a, client(second.url, cluster.token) as b:
        thread_id, everything, journal = await _journalled(cluster, a, "a lost publish", 5)
        # The third event never reached the journal (NATS was away when it was published).
        lost_seq, lost_id = journal[2]
        await _drop_from_journal(cluster, lost_seq)
        before = await _journal_events(b)
        path = f"/api/threads/{thread_id}/events"
        # A client before the hole is caught up by the primary, exactly.
        got, resumes = await resume_counted(b, path, str(everything[0][0]), len(everything) - 1)
        assert got == everything[1:]
        assert resumes == 0
        # The edge kept what the journal proves: the events after the hole.
        after_hole = [event_id for event_id, _ in everything if event_id > lost_id]
        assert await _journal_events(b) - before == len(after_hole)
        # So a client after the hole resumes on the edge.
        got, resumes = await resume_counted(b, path, str(lost_id), len(after_hole))
        assert got == [event for event in everything if event[0] > lost_id]
        assert resumes == 1


async def _post_when_up(http: httpx.AsyncClient, thread_id: str, text: str) -> None:
    """Post a message, retrying while the edge answers 503 (NATS on its way back)."""
    with anyio.fail_after(20):
        while (
            response := await http.post(f"/api/threads/{thread_id}/messages", json={"text": text})
        ).status_code == 503:
            await anyio.sleep(0.2)
    assert response.status_code == 201, response.text


async def test_a_nats_server_that_lost_its_store_gets_the_journal_back(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster:
        token = cluster.primary.token
        assert token is not None
        first, second = cluster.edges
        async with client(first.url, token) as a, client(second.url, token) as b:
            thread_id = await _thread_with_messages(a, "before the restart", 2)
            cluster.nats.stop()
            shutil.rmtree(cluster.nats.store_dir)
            cluster.nats.start()
            # The primary makes the journal's stream again once it is back: until then its
            # publishes are lost, and a run never reaches back across them.
            with anyio.fail_after(20):
                n = 0
                while not await _journal_of(cluster, thread_id):
                    await _post_when_up(a, thread_id, f"after {n}")
                    n += 1
            await _post_when_up(a, thread_id, "last")
            journalled = [event_id for _, event_id in await _journal_of(cluster, thread_id)]
            everything = await events_after(cluster, token, thread_id, 0)
            assert journalled == [i for i, _ in everything if i >= journalled[0]]
            path = f"/api/threads/{thread_id}/events"
            got, resumes = await resume_counted(b, path, str(journalled[0]), len(journalled) - 1)
            assert got == [event for event in everything if event[0] > journalled[0]]
            assert resumes == 1


async def test_without_jetstream_resuming_clients_are_caught_up_by_the_primary(
    tmp_path: Path,
) -> None:
    with running_cluster(tmp_path, jetstream=False) as cluster:
        token = cluster.primary.token
        assert token is not None
        first, second = cluster.edges
        async with client(first.url, token) as a, client(second.url, token) as b:
            thread_id = await _thread_with_messages(a, "no journal", 3)
            everything = await events_after(cluster, token, thread_id, 0)
            path = f"/api/threads/{thread_id}/events"
            got, resumes = await resume_counted(b, path, str(everything[0][0]), len(everything) - 1)
            assert got == everything[1:]
            assert resumes == 0
            assert await _journal_events(b) == 0
        # Said once, however often the primary tries again.
        assert cluster.primary.log().count("no thread journal") == 1
