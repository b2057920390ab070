"""The model's function calls in a relayed conversation: run through the tool plugins exactly as
a reply's tool calls are (rows pending → running → done | failed, approvals, handoffs), their
results handed back for `function_call_output` items.

The reply machinery (voicestack.agent.reply_tools) is reused whole; only its chat-message
shaped results are unpacked here into (call_id, output) pairs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

from voicestack.agent.agents import AgentProfile, Agents
from voicestack.agent.handoff import AgentTools
from voicestack.agent.llm_calls import ToolCallRequest
from voicestack.agent.reply import AgentSettings
from voicestack.agent.reply_state import Claim
from voicestack.agent.reply_tools import Approval, CallFunction, ReplyTools
from voicestack.agent.tool_loading import ToolSet
from voicestack.store.db import WriteDB
from voicestack.store.store import Store

T = TypeVar("T")


class RelayTools:
    """Runs function calls for relayed replies, as the thread's agent."""

    def __init__(
        self,
        *,
        store: Store,
        tools: ToolSet,
        agents: Agents,
        settings: AgentSettings,
        run_query: CallFunction,
        run_mutation: CallFunction,
    ) -> None:
        self._store = store
        self._tools = tools
        self._agents = agents
        self._settings = settings
        self._run_query = run_query
        self._run_mutation = run_mutation

    def offer(self, agent: AgentProfile) -> AgentTools:
        """What `agent` offers the model."""
        return AgentTools.of(agent, self._tools, self._agents)

    def for_reply(self, claim: Claim, wait_for_approval: Approval) -> ReplyTools:
        """The calls of one reply (its rows belong to the claim's message); a call that needs
        approval waits on `wait_for_approval`."""

        async def write_output(write: Callable[[WriteDB], T]) -> T:
            return (await self._store.write(write)).value

        calls = ReplyTools(
            claim,
            store=self._store,
            tools=self._tools,
            agents=self._agents,
            settings=self._settings,
            write_output=write_output,
            deadline_paused=contextlib.nullcontext,
            wait_for_approval=wait_for_approval,
            run_query=self._run_query,
            run_mutation=self._run_mutation,
        )
        calls.answer_as(claim.agent)
        return calls


async def run_function_calls(
    calls: ReplyTools, step: int, requests: list[ToolCallRequest]
) -> list[tuple[str, str]]:
    """Run one response's calls as rows of the reply, each call's (call_id, output); raises
    ReplyStopped if the reply was stopped meanwhile (a handoff found it ended)."""
    entries: list[dict[str, Any]] = await calls.run_calls(step, requests)
    return [
        (str(entry["tool_call_id"]), str(entry["content"]))
        for entry in entries
        if entry.get("role") == "tool"
    ]


def call_request(event: dict[str, Any]) -> ToolCallRequest | None:
    """The call of a `response.function_call_arguments.done` (or of a function_call item)."""
    item = event.get("item") if isinstance(event.get("item"), dict) else event
    assert isinstance(item, dict)
    call_id, name, arguments = item.get("call_id"), item.get("name"), item.get("arguments")
    if not (isinstance(call_id, str) and isinstance(name, str)):
        return None
    return ToolCallRequest(call_id, name, arguments if isinstance(arguments, str) else "{}")


class Approvals:
    """Tool calls waiting for a person's decision, released by the thread feed's `tool_call`
    events (the relay follows its thread's feed, as every watcher does)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._waiting: dict[str, asyncio.Future[bool]] = {}

    async def wait(self, call_id: str) -> bool:
        """True once the call is approved, False once denied."""
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = waiter
        try:
            # The decision may have committed before the waiter existed.
            status = await self._store.read(
                lambda snap: snap.db().scalar(
                    "SELECT status FROM tool_calls WHERE id = ?", (call_id,)
                )
            )
            if status != "awaiting_approval" and not waiter.done():
                waiter.set_result(status == "pending")
            return await waiter
        finally:
            self._waiting.pop(call_id, None)

    def seen(self, call: dict[str, Any]) -> None:
        """A `tool_call` event of the feed."""
        waiter = self._waiting.get(str(call.get("id")))
        status = call.get("status")
        if waiter is not None and not waiter.done() and status != "awaiting_approval":
            waiter.set_result(status == "pending")
