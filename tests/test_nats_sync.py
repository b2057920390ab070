"""A subscription made and settled (voicestack/scale/nats_sync.py) is in place at a real
nats-server: a message published from another connection right after it always arrives. With
a single flush, nats-py's PING can overtake the buffered SUB, and such messages go missing (on
this machine, about one in ten)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from tests.support.scale import NatsServer
from voicestack.scale.nats_sync import settled

pytestmark = pytest.mark.anyio

TRIALS = 300


async def test_a_settled_subscription_gets_what_is_published_right_after(tmp_path: Path) -> None:
    server = NatsServer(tmp_path, jetstream=False)
    server.start()
    try:
        subscriber = await nats.connect(server.url)
        publisher = await nats.connect(server.url)
        missed = 0
        for k in range(TRIALS):
            got = asyncio.Event()

            async def arrived(msg: Msg, got: asyncio.Event = got) -> None:
                got.set()

            subscription = await subscriber.subscribe(f"settle.{k}", cb=arrived)
            await settled(subscriber)
            await publisher.publish(f"settle.{k}", b"x")
            await settled(publisher)
            try:
                await asyncio.wait_for(got.wait(), 1.0)
            except TimeoutError:
                missed += 1
            await subscription.unsubscribe()
        await subscriber.close()
        await publisher.close()
    finally:
        server.stop()
    assert missed == 0
