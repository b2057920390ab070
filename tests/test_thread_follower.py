"""An edge's ThreadFollower over a real nats-server: it keeps what comes on the thread's subject
while an opening is unanswered, then takes the stream the answer names from the message it
names, skipping the ones before (the answer's catch-up covered them) and other primaries'
streams of the thread; a message missed after that resyncs the stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from tests.support.scale import NatsServer
from voicestack.scale import subjects
from voicestack.scale.envelope import ResponseEnvelope
from voicestack.scale.link import EdgeLink
from voicestack.scale.nats_sync import settled
from voicestack.scale.stream_wire import FIRST_SEQ_HEADER, THREAD_STREAM_HEADER, StreamPublisher
from voicestack.scale.thread_follower import ThreadFollower

pytestmark = pytest.mark.anyio

THREAD = "thr_follow"


@dataclass
class Recorder:
    """An upstream that keeps what the follower hands it."""

    primary: str | None = "p1"
    chunks: list[bytes] = field(default_factory=list)
    lost: int = 0

    def receive(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def ended(self, reason: str) -> None:
        self.chunks.append(f"ended {reason}".encode())

    def primary_lost(self) -> None:
        self.lost += 1

    def frame(self, kind: str, payload: bytes) -> None:
        raise AssertionError("no frames on a thread stream")


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path, jetstream=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        print(f"--- nats-server log\n{server.log_path.read_text(errors='replace')}")


@pytest.fixture
async def link(nats_server: NatsServer) -> AsyncIterator[EdgeLink]:
    edge = EdgeLink(nats_server.url)
    await edge.start()
    with anyio.fail_after(5):
        while not edge.connected:
            await anyio.sleep(0.01)
    try:
        yield edge
    finally:
        await edge.close()


@pytest.fixture
async def primary(nats_server: NatsServer) -> AsyncIterator[Client]:
    nc = await nats.connect(nats_server.url)
    try:
        yield nc
    finally:
        await nc.close()


@pytest.fixture
async def followed(link: EdgeLink) -> AsyncIterator[tuple[Recorder, ThreadFollower]]:
    """An upstream and its follower of THREAD (unsubscribed afterwards)."""
    upstream = Recorder()
    follower = ThreadFollower(link, upstream, THREAD, lambda: "stream-1")
    yield upstream, follower
    follower.close()


def answer(instance: str, first_seq: int) -> ResponseEnvelope:
    """A primary's answer naming its stream `instance`, taken from message `first_seq`."""
    headers = [
        (THREAD_STREAM_HEADER.encode(), instance.encode()),
        (FIRST_SEQ_HEADER.encode(), str(first_seq).encode()),
    ]
    return ResponseEnvelope(200, headers, primary="p1")


async def until(done: Callable[[], bool], state: Callable[[], object] = lambda: None) -> None:
    """Until `done()` holds (10 s at most; then the failure says `state()`)."""
    with anyio.move_on_after(10):
        while not done():
            await anyio.sleep(0.01)
    assert done(), f"not within 10 s: {state()}"


def _state(probe: Probe, upstream: Recorder, primary: Client, link: EdgeLink) -> str:
    """What each side has seen, for a wait that failed."""
    edge = link._nc
    received = None if edge is None else (edge.stats, edge.is_connected)
    return f"{probe}, {upstream}, published {primary.stats}, edge {received}"


@dataclass
class Probe:
    """A subscription of the edge's own connection beside the follower's: what it has seen has
    reached the edge, in the order the follower gets it too."""

    seen: int = 0

    async def on_message(self, msg: Msg) -> None:
        self.seen += 1


async def test_the_stream_is_taken_from_the_message_the_answer_names(
    link: EdgeLink, followed: tuple[Recorder, ThreadFollower], primary: Client
) -> None:
    upstream, follower = followed
    ours = StreamPublisher(primary, subjects.thread_subject(THREAD, "ours"))
    theirs = StreamPublisher(primary, subjects.thread_subject(THREAD, "theirs"))
    await ours.send(b"before the subscription")
    await settled(primary)  # past the server before the edge subscribes
    await follower.follow()
    probe = Probe()
    await link.subscribe(subjects.thread_streams(THREAD), probe.on_message)
    follower.expect()
    for text in (b"one", b"two", b"three"):  # while the opening is unanswered
        await ours.send(text)
        await theirs.send(b"another primary's " + text)
    await settled(primary)
    await until(lambda: probe.seen >= 6, lambda: _state(probe, upstream, primary, link))
    await anyio.sleep(0.05)  # the follower's own subscription keeps them meanwhile
    first_seq = ours.next_seq - 1  # the answer's catch-up covered "one" and "two"
    follower.answered(answer("ours", first_seq))
    await ours.send(b"four")
    await theirs.send(b"another primary's four")
    await settled(primary)
    await until(lambda: len(upstream.chunks) == 2, lambda: _state(probe, upstream, primary, link))
    assert upstream.chunks == [b"three", b"four"]
    assert upstream.lost == 0

    ours.seq += 1  # one message goes missing
    await ours.send(b"after a hole")
    await settled(primary)
    await until(lambda: upstream.lost == 1, lambda: _state(probe, upstream, primary, link))
    await ours.send(b"after the resync began")
    await settled(primary)
    await until(lambda: probe.seen >= 10, lambda: _state(probe, upstream, primary, link))
    await anyio.sleep(0.05)
    assert upstream.chunks == [b"three", b"four"]
    assert upstream.lost == 1  # told once: the stream is not routed until reopened


async def test_an_answer_naming_no_shared_stream_takes_nothing_from_the_subject(
    link: EdgeLink, followed: tuple[Recorder, ThreadFollower], primary: Client
) -> None:
    upstream, follower = followed
    publisher = StreamPublisher(primary, subjects.thread_subject(THREAD, "ours"))
    await follower.follow()
    probe = Probe()
    await link.subscribe(subjects.thread_streams(THREAD), probe.on_message)
    follower.expect()
    await publisher.send(b"early")
    await settled(primary)
    await until(lambda: probe.seen >= 1, lambda: _state(probe, upstream, primary, link))
    follower.answered(ResponseEnvelope(200, primary="p1"))  # a stream of the edge's own
    await publisher.send(b"late")
    await settled(primary)
    await until(lambda: probe.seen >= 2, lambda: _state(probe, upstream, primary, link))
    await anyio.sleep(0.05)
    assert upstream.chunks == []
