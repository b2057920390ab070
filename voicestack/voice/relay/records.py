"""Where a relayed conversation keeps its turns and replies (RelayRecords).

A RelaySession reads the provider's events and writes the thread: user turns and their
transcripts, the assistant's reply with its deltas, usage and end, the metrics of its audio, and
the function calls the model makes. On the server that holds the database these go to the store
itself (StoreRelayRecords). On an edge the session runs near its client and holds the provider's
socket, and its records are kept by the primary over NATS (voicestack/scale/edge_relay.py): the
audio stays on the edge, only the text crosses.

What the provider is told of the answering agent (VoiceAgent) comes from the same place, since
an edge knows no agents of its own.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

from voicestack.agent.cost import Pricing
from voicestack.agent.handoff import AgentTools
from voicestack.agent.llm_calls import ToolCallRequest
from voicestack.agent.reply_state import Claim
from voicestack.agent.reply_tools import Approval, ReplyStopped, ReplyTools
from voicestack.store.store import Store
from voicestack.voice.realtime.metrics import TurnClock
from voicestack.voice.realtime.records import HUNG_UP, ReplyEnd, save_reply_end
from voicestack.voice.relay import transcripts
from voicestack.voice.relay.tools import RelayTools, run_function_calls

# Replies whose function calls a server keeps state for (handoffs made, corrections asked);
# a reply's entry goes at its end, and the oldest beyond this when ends never come.
MAX_REPLIES_WITH_CALLS = 1000


@dataclass(frozen=True, slots=True)
class VoiceAgent:
    """The answering agent as the provider's `session.update` tells it: its name, instructions,
    voice, and tools as Realtime function definitions."""

    name: str
    instructions: str
    voice: str
    tools: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, offer: AgentTools) -> VoiceAgent:
        """The agent of `offer`, with the tools it offers."""
        agent = offer.agent
        tools = [
            {"type": "function", **spec["function"]}
            for spec in offer.openai_specs()
            if spec.get("type") == "function"
        ]
        return cls(agent.name, agent.instructions, agent.voice, tools)

    def encode(self) -> dict[str, Any]:
        """As the primary sends it to an edge."""
        return {
            "name": self.name,
            "instructions": self.instructions,
            "voice": self.voice,
            "tools": self.tools,
        }

    @classmethod
    def decode(cls, body: Any) -> VoiceAgent:
        """What `encode` made; KeyError, TypeError or ValueError when it is not that."""
        tools = body["tools"]
        if not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools):
            raise TypeError("tools must be a list of objects")
        return cls(str(body["name"]), str(body["instructions"]), str(body["voice"]), tools)


@dataclass(frozen=True, slots=True)
class CallResults:
    """What running one response's function calls gave: each call's output, and the agent that
    answers now (another one after a handoff)."""

    outputs: list[tuple[str, str]]
    agent: VoiceAgent


class RelayRecords(Protocol):
    """What a relayed conversation of one caller on one thread saves and reads."""

    async def history(self, limit: int) -> list[dict[str, Any]]:
        """The thread's last `limit` finished messages as `conversation.item.create` events."""
        ...

    async def open_user_turn(self, audio_s: float) -> str:
        """A `streaming` user message for speech the provider committed; its id."""
        ...

    async def user_delta(self, message_id: str, text: str, seq: int) -> None:
        """A piece of a user turn's transcript."""
        ...

    async def end_user_turn(
        self, message_id: str, text: str | None, error: tuple[str, str] | None = None
    ) -> None:
        """A user turn's transcript is known (None: what streamed), or it failed with `error`."""
        ...

    async def typed_turn(self, text: str) -> str:
        """A typed user turn, complete at once; its id."""
        ...

    async def open_reply(self, reply_to: str | None, agent: str, audio_in_s: float) -> Claim:
        """The assistant message of a relayed turn, `streaming`, answered by `agent`."""
        ...

    async def reply_delta(self, claim: Claim, text: str, seq: int) -> None:
        """A piece of the assistant's transcript."""
        ...

    async def begin_response(self, message_id: str) -> None:
        """A provider response of the reply begins (a step of it)."""
        ...

    async def response_usage(self, message_id: str, usage: tuple[int, int] | None) -> None:
        """A response's token counts (input, output), when reported."""
        ...

    async def end_reply(
        self, claim: Claim, status: str, wall_ms: int, error: tuple[str, str] | None = None
    ) -> None:
        """The reply's final status (a reply already cut to what was heard keeps that)."""
        ...

    async def reply_ended(self, message_id: str, end: ReplyEnd, clock: TurnClock) -> None:
        """How the reply's audio ended (spoken, cut, hung up), with its voice metrics."""
        ...

    async def run_calls(
        self, claim: Claim, agent: str, step: int, requests: list[ToolCallRequest]
    ) -> CallResults:
        """Run one response's function calls as tool-call rows of the reply, answered as
        `agent`; raises ReplyStopped when the reply was stopped meanwhile."""
        ...


class RepliesWithCalls:
    """The function-call state of the replies a server runs calls for, by message id: the same
    ReplyTools for every response of one reply, so its handoff count holds across them, and the
    calls running now, so that a barge-in can stop them."""

    def __init__(self, tools: RelayTools) -> None:
        self._tools = tools
        self._replies: OrderedDict[str, ReplyTools] = OrderedDict()
        self._running: dict[str, asyncio.Task[list[tuple[str, str]]]] = {}
        # Replies whose calls were stopped before they ran (a stop may overtake its calls).
        self._stopped: OrderedDict[str, None] = OrderedDict()

    def of(self, claim: Claim, agent: str, wait_for_approval: Approval) -> ReplyTools:
        """The reply's calls, answered as `agent` when first made."""
        calls = self._replies.get(claim.message_id)
        if calls is None:
            calls = self._tools.for_reply(claim, wait_for_approval)
            calls.answer_as(agent)
            self._replies[claim.message_id] = calls
            while len(self._replies) > MAX_REPLIES_WITH_CALLS:
                self._replies.popitem(last=False)
        else:
            self._replies.move_to_end(claim.message_id)
        return calls

    async def run(
        self, message_id: str, calls: ReplyTools, step: int, requests: list[ToolCallRequest]
    ) -> list[tuple[str, str]]:
        """Run one response's calls (see run_function_calls); raises ReplyStopped when they
        were stopped (`stop`) before they ended."""
        if message_id in self._stopped:
            raise ReplyStopped
        running = asyncio.ensure_future(run_function_calls(calls, step, requests))
        self._running[message_id] = running
        try:
            return await running
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if running.cancelled() and not (current is not None and current.cancelling()):
                raise ReplyStopped from None
            raise
        finally:
            if self._running.get(message_id) is running:
                del self._running[message_id]

    def stop(self, message_id: str) -> None:
        """Stop the reply's calls running now, if any (a barge-in on an edge)."""
        running = self._running.get(message_id)
        if running is not None:
            running.cancel()
            return
        self._stopped[message_id] = None
        while len(self._stopped) > MAX_REPLIES_WITH_CALLS:
            self._stopped.popitem(last=False)

    def forget(self, message_id: str) -> None:
        """The reply has ended."""
        self._replies.pop(message_id, None)
        self._stopped.pop(message_id, None)


class StoreRelayRecords:
    """RelayRecords in this server's own store."""

    def __init__(
        self,
        *,
        store: Store,
        thread_id: str,
        author: str | None,
        model: str,
        pricing: Pricing | None,
        replies: RepliesWithCalls,
        wait_for_approval: Approval,
    ) -> None:
        """`author` speaks on `thread_id`; replies are of `model`; calls that need approval
        wait on `wait_for_approval`."""
        self._store = store
        self._thread_id = thread_id
        self._author = author
        self._model = model
        self._pricing = pricing
        self._replies = replies
        self._wait_for_approval = wait_for_approval

    async def _write(self, fn: Any) -> Any:
        return (await self._store.write(fn)).value

    async def history(self, limit: int) -> list[dict[str, Any]]:
        """As RelayRecords.history."""
        thread_id = self._thread_id
        items: list[dict[str, Any]] = await self._store.read(
            lambda snap: transcripts.history_items(snap.db(), thread_id, limit)
        )
        return items

    async def open_user_turn(self, audio_s: float) -> str:
        """As RelayRecords.open_user_turn."""
        thread_id, author = self._thread_id, self._author
        message_id: str = await self._write(
            lambda db: transcripts.open_user_turn(db, thread_id, author, audio_s)
        )
        return message_id

    async def user_delta(self, message_id: str, text: str, seq: int) -> None:
        """As RelayRecords.user_delta."""
        thread_id = self._thread_id
        await self._write(
            lambda db: transcripts.add_user_delta(db, thread_id, message_id, text, seq)
        )

    async def end_user_turn(
        self, message_id: str, text: str | None, error: tuple[str, str] | None = None
    ) -> None:
        """As RelayRecords.end_user_turn."""
        await self._write(lambda db: transcripts.end_user_turn(db, message_id, text, error))

    async def typed_turn(self, text: str) -> str:
        """As RelayRecords.typed_turn."""
        thread_id, author = self._thread_id, self._author
        message_id: str = await self._write(
            lambda db: transcripts.save_typed_turn(db, thread_id, author, text)
        )
        return message_id

    async def open_reply(self, reply_to: str | None, agent: str, audio_in_s: float) -> Claim:
        """As RelayRecords.open_reply."""
        thread_id, author, model = self._thread_id, self._author, self._model
        claim: Claim = await self._write(
            lambda db: transcripts.open_reply(
                db, thread_id, author, reply_to, agent, model, audio_in_s
            )
        )
        return claim

    async def reply_delta(self, claim: Claim, text: str, seq: int) -> None:
        """As RelayRecords.reply_delta."""
        await self._write(lambda db: transcripts.add_reply_delta(db, claim, text, seq))

    async def begin_response(self, message_id: str) -> None:
        """As RelayRecords.begin_response."""
        await self._write(lambda db: transcripts.begin_response(db, message_id))

    async def response_usage(self, message_id: str, usage: tuple[int, int] | None) -> None:
        """As RelayRecords.response_usage."""
        if usage is not None:
            await self._write(lambda db: transcripts.add_response_usage(db, message_id, usage))

    async def end_reply(
        self, claim: Claim, status: str, wall_ms: int, error: tuple[str, str] | None = None
    ) -> None:
        """As RelayRecords.end_reply."""
        self._replies.forget(claim.message_id)
        pricing = self._pricing
        await self._write(
            lambda db: transcripts.end_reply(db, claim, status, wall_ms, error, pricing)
        )

    async def reply_ended(self, message_id: str, end: ReplyEnd, clock: TurnClock) -> None:
        """As RelayRecords.reply_ended."""
        if end.how == HUNG_UP:
            self._replies.forget(message_id)
        await self._write(lambda db: save_reply_end(db, message_id, end, clock))

    async def run_calls(
        self, claim: Claim, agent: str, step: int, requests: list[ToolCallRequest]
    ) -> CallResults:
        """As RelayRecords.run_calls."""
        calls = self._replies.of(claim, agent, self._wait_for_approval)
        outputs = await self._replies.run(claim.message_id, calls, step, requests)
        return CallResults(outputs, VoiceAgent.of(calls.offered()))

    def stop_calls(self, message_id: str) -> None:
        """Stop the reply's function calls running now, if any."""
        self._replies.stop(message_id)
