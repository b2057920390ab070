"""Speech-to-speech conversations on an edge (DESIGN §12): the edge holds the provider's socket.

A conversation whose thread's agent talks speech-to-speech (`voice_mode = "realtime"`) runs here
as a RelaySession, the same one a single server runs: the client's audio goes from the edge to
the provider, and the provider's audio comes back through the edge, resampled here. What the
conversation writes and reads (turns, transcripts, the reply, its usage, function calls) goes to
the primary as named ops with the client's credentials (PrimaryRelayRecords, answered by
voicestack/http/relay_records.py), so only the text crosses NATS, never the audio.

The edge holds no provider secret. The primary answers the conversation's start with what the
provider is told of the agent, the --realtime-* settings, and a short-lived key minted with its
own key for one connection; a reconnection asks for another. When the primary cannot mint one
(a provider with no client secrets), the edge relays the socket to the primary, as before.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from voicestack import jsoncodec
from voicestack.agent.llm_calls import ToolCallRequest
from voicestack.agent.reply_state import Claim
from voicestack.agent.reply_tools import ReplyStopped
from voicestack.functions.errors import FunctionError
from voicestack.reactive.streams import Stream
from voicestack.scale.edge import Edge
from voicestack.scale.envelope import RequestEnvelope
from voicestack.scale.link import OPEN_TIMEOUT_S
from voicestack.scale.primary_calls import PrimaryAway, call_as, refusal_of
from voicestack.voice.realtime.client import VoiceClient
from voicestack.voice.realtime.metrics import TurnClock
from voicestack.voice.realtime.records import ReplyEnd
from voicestack.voice.realtime.wire import Start
from voicestack.voice.relay.context import RelayContext
from voicestack.voice.relay.provider import ProviderUnavailable
from voicestack.voice.relay.records import CallResults, VoiceAgent
from voicestack.voice.relay.session import RelaySession
from voicestack.voice.relay.session_config import RelaySettings

log = logging.getLogger(__name__)

# What a conversation's quick op waits for the primary.
_QUICK_S = OPEN_TIMEOUT_S
# Function calls may wait on a person's approval: the op waits as long as it takes, up to this.
_CALLS_S = 3600.0
# A write handed over to the background is tried this often while no primary answers.
_LATER_TRIES = 5
_LATER_WAIT_S = 1.0
# How a reply's audio ended goes through the pipeline conversation's route, not an op.
_REPLY_ENDED = "reply_ended"
# Writes that end something (a turn, a reply, its audio, its calls): each is taken once by the
# primary however often it comes, and none is dropped while the primary is away.
_ENDINGS = frozenset({"user_end", "reply_end", _REPLY_ENDED, "stop_calls"})
# A minted key is good for a minute; the first connection takes the start's key while it is
# younger than this (a client may wait before it sends its `start`), else asks for another.
_FRESH_KEY_S = 30.0


@dataclass(frozen=True, slots=True)
class RelayPlan:
    """What the primary answered a conversation's start: the agent, the settings, the flush
    interval, and the key of the first provider connection."""

    agent: VoiceAgent
    settings: RelaySettings
    flush_ms: float
    key: str | None
    received_at: float = field(default_factory=time.monotonic)  # about when `key` was minted

    @classmethod
    def decode(cls, body: dict[str, Any]) -> RelayPlan:
        """The `start` op's answer; KeyError, TypeError or ValueError when it is not one."""
        given = body["settings"]
        url = given["url"]
        settings = RelaySettings(
            url=None if url is None else str(url),
            api_key=None,
            model=str(given["model"]),
            timeout_s=float(given["timeoutS"]),
            transcribe_model=str(given["transcribeModel"]),
            silence_ms=int(given["silenceMs"]),
            context_messages=int(given["contextMessages"]),
        )
        key = body.get("key")
        return cls(
            VoiceAgent.decode(body["agent"]),
            settings,
            float(body["flushMs"]),
            None if key is None else str(key),
        )


class PrimaryRelayRecords:
    """RelayRecords kept by the primary, asked with the conversation's client's credentials.

    Writes whose answer the conversation does not need (transcript pieces, a reply's steps,
    usage and end, its audio's end) are sent in order in the background, so that the
    provider's audio never waits on a round trip to the primary; a write is tried again while
    no primary answers, a few times. A call that needs an answer (a new message's id, the
    history, function calls) waits until the writes before it are sent.
    """

    def __init__(self, edge: Edge, credentials: RequestEnvelope, thread_id: str) -> None:
        """`credentials` is the client's request, whose credential headers every op carries
        (the edge's own call header among them)."""
        self._edge = edge
        self._credentials = credentials
        self._thread_id = thread_id
        self._path = f"/api/threads/{thread_id}/audio/relay"
        self._later: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._writing: asyncio.Task[None] | None = None

    async def op(self, kind: str, /, timeout: float = _QUICK_S, **fields: Any) -> dict[str, Any]:
        """The primary's answer to the op `kind` (an empty dict for 204), once the writes
        handed over before it are sent; raises FunctionError when it refuses or cannot be
        reached."""
        await self.saved(timeout)
        return await self._op_now(kind, timeout, fields)

    async def _op_now(self, kind: str, timeout: float, fields: dict[str, Any]) -> dict[str, Any]:
        path, body = self._path, {"op": kind, **fields}
        if kind == _REPLY_ENDED:  # the pipeline conversation's own route
            path, body = (
                f"/api/threads/{self._thread_id}/audio/replies/{fields['id']}",
                fields["end"],
            )
        json_type = [(b"content-type", b"application/json")]
        encoded = jsoncodec.dumps(body)
        answer = await call_as(
            self._edge, self._credentials, "POST", path, encoded, json_type, timeout
        )
        if answer.status == 204:
            return {}
        if answer.status not in (200, 201):
            raise refusal_of(answer)
        answered: dict[str, Any] = json.loads(answer.body)
        return answered

    def _write_later(self, kind: str, **fields: Any) -> None:
        """Hand the op `kind` over to be sent in order, in the background."""
        self._later.put_nowait((kind, fields))
        if self._writing is None or self._writing.done():
            self._writing = self._edge.voice_work(self._write_all())

    async def _write_all(self) -> None:
        while not self._later.empty():
            kind, fields = self._later.get_nowait()
            if not await self._write(kind, fields):
                self._drop_pieces()

    def _drop_pieces(self) -> None:
        """The primary stayed away: the pieces waiting (transcript deltas, a reply's steps
        and usage) are dropped, so that the conversation does not wait on them; the endings
        (a turn's, a reply's, its audio's, a stop) are kept, so that no message is left
        streaming."""
        waiting = [self._later.get_nowait() for _ in range(self._later.qsize())]
        kept = [(kind, fields) for kind, fields in waiting if kind in _ENDINGS]
        for write in kept:
            self._later.put_nowait(write)
        if len(kept) < len(waiting):
            dropped = len(waiting) - len(kept)
            log.warning("%d writes of %s not kept: no primary answered", dropped, self._thread_id)

    async def _write(self, kind: str, fields: dict[str, Any]) -> bool:
        """Send one write, again while no primary answers (a few times): a piece only when it
        surely reached none, so that nothing is done twice; an ending, which the primary
        takes once however often it comes, also after a time-out. False when the primary
        stayed away."""
        for attempt in range(_LATER_TRIES):
            try:
                await self._op_now(kind, _QUICK_S, fields)
                return True
            except PrimaryAway as exc:
                again = exc.undelivered or kind in _ENDINGS
                if not again or attempt + 1 == _LATER_TRIES:
                    log.warning("%s of %s not kept: %s", kind, self._thread_id, exc.message)
                    return False
            except FunctionError as exc:  # refused: the next writes may still be taken
                log.warning("%s of %s refused: %s", kind, self._thread_id, exc.message)
                return True
            except Exception:
                log.exception("%s of %s failed", kind, self._thread_id)
                return True
            await asyncio.sleep(_LATER_WAIT_S)
        return False

    async def saved(self, timeout: float | None = None) -> None:
        """Wait until every write handed over so far is sent (or given up on); FunctionError
        `primary_unavailable` when that takes longer than `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while self._writing is not None and not self._writing.done():
                    await asyncio.shield(self._writing)
        except TimeoutError:
            raise PrimaryAway("earlier writes are still waiting for it", False) from None

    async def history(self, limit: int) -> list[dict[str, Any]]:
        """As RelayRecords.history."""
        items: list[dict[str, Any]] = (await self.op("history", limit=limit))["items"]
        return items

    async def open_user_turn(self, audio_s: float) -> str:
        """As RelayRecords.open_user_turn."""
        return str((await self.op("user_turn", audioS=audio_s))["messageId"])

    async def user_delta(self, message_id: str, text: str, seq: int) -> None:
        """As RelayRecords.user_delta, in the background."""
        self._write_later("user_delta", messageId=message_id, text=text, seq=seq)

    async def end_user_turn(
        self, message_id: str, text: str | None, error: tuple[str, str] | None = None
    ) -> None:
        """As RelayRecords.end_user_turn, in the background."""
        self._write_later("user_end", messageId=message_id, text=text, error=error)

    async def typed_turn(self, text: str) -> str:
        """As RelayRecords.typed_turn."""
        return str((await self.op("typed", text=text))["messageId"])

    async def open_reply(self, reply_to: str | None, agent: str, audio_in_s: float) -> Claim:
        """As RelayRecords.open_reply (the claim's author is the primary's to know)."""
        opened = await self.op("reply", replyTo=reply_to, agent=agent, audioInS=audio_in_s)
        message_id, position = str(opened["messageId"]), int(opened["position"])
        return Claim(message_id, self._thread_id, position, None, False, agent)

    async def reply_delta(self, claim: Claim, text: str, seq: int) -> None:
        """As RelayRecords.reply_delta, in the background."""
        self._write_later("reply_delta", messageId=claim.message_id, text=text, seq=seq)

    async def begin_response(self, message_id: str) -> None:
        """As RelayRecords.begin_response, in the background."""
        self._write_later("response", messageId=message_id)

    async def response_usage(self, message_id: str, usage: tuple[int, int] | None) -> None:
        """As RelayRecords.response_usage, in the background."""
        if usage is not None:
            self._write_later("usage", messageId=message_id, usage=list(usage))

    async def end_reply(
        self, claim: Claim, status: str, wall_ms: int, error: tuple[str, str] | None = None
    ) -> None:
        """As RelayRecords.end_reply, in the background."""
        self._write_later(
            "reply_end", messageId=claim.message_id, status=status, wallMs=wall_ms, error=error
        )

    async def reply_ended(self, message_id: str, end: ReplyEnd, clock: TurnClock) -> None:
        """As RelayRecords.reply_ended, in the background (through the pipeline
        conversation's own route)."""
        self._write_later(_REPLY_ENDED, id=message_id, end=end.encode(clock))

    async def run_calls(
        self, claim: Claim, agent: str, step: int, requests: list[ToolCallRequest]
    ) -> CallResults:
        """As RelayRecords.run_calls: the calls run on the primary, as the reply's agent
        there; cancelled (a barge-in), they are stopped there too."""
        asked = [{"callId": r.call_id, "name": r.name, "arguments": r.arguments} for r in requests]
        fields = {"messageId": claim.message_id, "step": step, "requests": asked}
        try:
            ran = await self.op("calls", _CALLS_S, **fields)
        except FunctionError as exc:
            if exc.code == "reply_stopped":
                raise ReplyStopped from None
            raise
        except asyncio.CancelledError:
            self._write_later("stop_calls", messageId=claim.message_id)
            raise
        outputs = [(str(call_id), str(output)) for call_id, output in ran["outputs"]]
        return CallResults(outputs, VoiceAgent.decode(ran["agent"]))

    async def provider_key(self) -> str:
        """A short-lived key for a provider connection; raises ProviderUnavailable."""
        try:
            return str((await self._op_now("key", _QUICK_S, {}))["key"])
        except (FunctionError, KeyError, TypeError) as exc:
            reason = exc.message if isinstance(exc, FunctionError) else "no key in the answer"
            raise ProviderUnavailable(reason) from None


async def relay_plan(records: PrimaryRelayRecords) -> RelayPlan | None:
    """The primary's plan for a speech-to-speech conversation here; None when the edge is to
    relay the socket to the primary instead (the primary says so, refuses the client, or
    cannot be reached: the primary then answers the client itself)."""
    try:
        return RelayPlan.decode(await records.op("start"))
    except FunctionError as exc:
        if exc.code not in ("relay_here", "primary_unavailable"):
            log.info("a relayed conversation's start was refused: %s", exc.message)
        return None
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("the primary's relay plan is not one: %s", exc)
        return None


def relay_session(
    plan: RelayPlan,
    records: PrimaryRelayRecords,
    thread_id: str,
    feed: Stream,
    start: Start,
    client: VoiceClient,
    forget: Callable[[Any], None],
) -> RelaySession:
    """The conversation's RelaySession on this edge, its first provider connection on the
    plan's key and each later one on a key the primary mints for it."""
    first_key = (plan.key, plan.received_at)

    async def provider_key() -> str | None:
        nonlocal first_key
        key, minted_at = first_key
        first_key = (None, 0.0)
        if key is not None and time.monotonic() - minted_at < _FRESH_KEY_S:
            return key
        return await records.provider_key()

    context = RelayContext(
        thread_id=thread_id,
        agent=plan.agent,
        records=records,
        start=start,
        client=client,
        settings=plan.settings,
        flush_ms=plan.flush_ms,
        provider_key=provider_key,
        forget=forget,
    )
    return RelaySession(context, feed)
