"""The tool calls of one reply: what the answering agent offers, and running the model's calls.

A step's calls become rows that move pending → (awaiting_approval →) running → done | failed;
their results go back to the model as the next step's tool messages. A `transfer_to_NAME` call
hands the thread to another agent, and from then on that agent's tools are the ones offered. A
transfer is checked when it runs, against the agent answering then: a step's calls are prepared
together, and an earlier call of the same step may have handed off already.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from voicestack import jsoncodec
from voicestack.agent.acting_user import reply_user
from voicestack.agent.agents import AgentProfile, Agents
from voicestack.agent.handoff import AgentTools, Transfer, hand_off
from voicestack.agent.llm import ProviderError
from voicestack.agent.llm_calls import ToolCallRequest
from voicestack.agent.reply_state import (
    Claim,
    NewToolCall,
    insert_tool_calls,
    update_tool_call,
)
from voicestack.agent.tool_loading import ToolSet
from voicestack.agent.tools import ToolArgsError, ToolCtx, parse_tool_args, run_tool
from voicestack.identity import Caller
from voicestack.store.db import WriteDB
from voicestack.store.store import Store

if TYPE_CHECKING:
    from voicestack.agent.reply import AgentSettings


class ReplyStopped(Exception):
    """Someone stopped the reply (cancel, hand-off) while it streamed."""


Approval = Callable[[str], Awaitable[bool]]
CallFunction = Callable[[str, Any, Caller | None], Awaitable[Any]]


class ReplyTools:
    """Runs the tool calls of one reply's steps, as the agent that answers."""

    def __init__(
        self,
        claim: Claim,
        *,
        store: Store,
        tools: ToolSet,
        agents: Agents,
        settings: AgentSettings,
        write_output: Callable[[Callable[[WriteDB], list[str]]], Awaitable[list[str]]],
        deadline_paused: Callable[[], contextlib.AbstractContextManager[None]],
        wait_for_approval: Approval,
        run_query: CallFunction,
        run_mutation: CallFunction,
    ) -> None:
        self.claim = claim
        self._store = store
        self._tools = tools
        self._agents = agents
        self._settings = settings
        self._write_output = write_output
        self._deadline_paused = deadline_paused
        # Who answers, and with which tools: the thread's agent when the reply was claimed,
        # until a handoff.
        self._offer: AgentTools | None = None
        self._handoffs = 0
        self._corrections: Counter[str] = Counter()
        self._wait_for_approval = wait_for_approval
        self._run_query = run_query
        self._run_mutation = run_mutation

    def answer_as(self, name: str) -> AgentProfile:
        """Make the agent `name` the one that answers from now on."""
        agent = self._agents.get(name)
        if agent is None:
            message = (
                f"This thread's agent {name!r} is not defined on this server any more; define"
                " it again, or start a new thread."
            )
            raise ProviderError("unknown_agent", message)
        self._offer = AgentTools.of(agent, self._tools, self._agents)
        return agent

    def offered(self) -> AgentTools:
        """The tools of the agent answering now."""
        assert self._offer is not None, "no agent answers yet"
        return self._offer

    @staticmethod
    def _refused(request: ToolCallRequest, error: str) -> NewToolCall:
        return NewToolCall(request.call_id, request.name, request.arguments, "failed", error)

    def _prepare(self, request: ToolCallRequest) -> tuple[NewToolCall, Any]:
        offer = self.offered()
        transfer = offer.transfer(request.name)
        if transfer is not None:
            return NewToolCall(
                request.call_id, request.name, request.arguments, "pending"
            ), transfer
        tool = offer.get(request.name)
        if tool is None:
            known = ", ".join(offer.names()) or "none"
            error = f"There is no tool named {request.name!r}. Available tools: {known}."
            return self._refused(request, error), None
        try:
            args = parse_tool_args(tool, request.arguments)
        except ToolArgsError as exc:
            self._corrections[tool.name] += 1
            if self._corrections[tool.name] > 1:
                error = f"{exc} The arguments were invalid again; do not call {tool.name} again."
            else:
                error = f"{exc} Call {tool.name} again with corrected arguments."
            return self._refused(request, error), None
        status = "awaiting_approval" if tool.needs_approval else "pending"
        return NewToolCall(request.call_id, request.name, request.arguments, status), args

    async def refuse_calls(self, step: int, requests: list[ToolCallRequest]) -> None:
        reason = "Not run: the reply reached its step limit (--max-steps)."
        refused = [self._refused(request, reason) for request in requests]
        await self._write_output(lambda db: insert_tool_calls(db, self.claim, step, refused))

    async def run_calls(self, step: int, requests: list[ToolCallRequest]) -> list[dict[str, Any]]:
        prepared = [self._prepare(request) for request in requests]
        new_calls = [call for call, _ in prepared]
        row_ids = await self._write_output(
            lambda db: insert_tool_calls(db, self.claim, step, new_calls)
        )
        entries: list[dict[str, Any]] = [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": r.call_id,
                        "type": "function",
                        "function": {"name": r.name, "arguments": r.arguments},
                    }
                    for r in requests
                ],
            }
        ]
        for row_id, (call, args) in zip(row_ids, prepared, strict=True):
            content = await self._run_call(row_id, call, args)
            entries.append({"role": "tool", "tool_call_id": call.call_id, "content": content})
        return entries

    async def _run_call(self, row_id: str, call: NewToolCall, args: Any) -> str:
        if call.status == "failed":
            return f"Error: {call.error}"
        if isinstance(args, Transfer):
            return await self._transfer(row_id, args)
        tool = self._tools.get(call.name)
        assert tool is not None
        if call.status == "awaiting_approval":
            with self._deadline_paused():
                approved = await self._wait_for_approval(row_id)
            if not approved:
                return "Error: the user denied this tool call."
        await self._store.write(lambda db: update_tool_call(db, row_id, status="running"))

        async def report(progress: Any) -> None:
            await self._store.write(lambda db: update_tool_call(db, row_id, progress=progress))

        # The tool acts as the message's author as they are now: a role or membership lost since
        # the message was sent is lost to the tool too.
        user = await self._store.read(lambda snap: reply_user(snap.db(), self.claim.author))
        ctx = ToolCtx(
            user=user,
            thread_id=self.claim.thread_id,
            call_id=row_id,
            store=self._store,
            run_query=lambda name, a: self._run_query(name, a, user),
            run_mutation=lambda name, a: self._run_mutation(name, a, user),
            report_progress=report,
        )
        timeout = tool.timeout_s if tool.timeout_s is not None else self._settings.tool_timeout_s
        outcome = await run_tool(tool, ctx, args, timeout)
        if outcome.ok:
            await self._store.write(
                lambda db: update_tool_call(db, row_id, status="done", result=outcome.result)
            )
            return _result_text(outcome.result)
        await self._store.write(
            lambda db: update_tool_call(db, row_id, status="failed", error=outcome.error)
        )
        return f"Error: {outcome.error}"

    async def _transfer(self, row_id: str, transfer: Transfer) -> str:
        """Hand the thread to the transfer's agent, if the agent answering now may (a call made
        in the same step as an earlier handoff was prepared for the agent before it) and the
        reply has handoffs left."""
        error = self._transfer_refusal(transfer)
        if error is not None:
            await self._store.write(
                lambda db: update_tool_call(db, row_id, status="failed", error=error)
            )
            return f"Error: {error}"
        target = transfer.target
        moved = await self._store.write(lambda db: hand_off(db, self.claim, row_id, target))
        if not moved.value:
            raise ReplyStopped
        self._handoffs += 1
        self.answer_as(target.name)
        return _result_text({"agent": target.name})

    def _transfer_refusal(self, transfer: Transfer) -> str | None:
        """Why `transfer` may not happen now, or None."""
        current = self.offered().agent
        target = transfer.target.name
        if target == current.name:
            return f"Not transferred: you are the {target} agent already. Answer the user yourself."
        if target not in current.handoffs:
            return (
                f"Not transferred: the {current.name} agent answers now, and it cannot transfer"
                f" to {target}. Answer the user yourself."
            )
        limit = self._settings.max_handoffs
        if self._handoffs >= limit:
            return (
                f"Not transferred: a reply may hand off at most {limit} times (--max-handoffs),"
                " and this one has. Answer the user yourself."
            )
        return None


def _result_text(result: Any) -> str:
    return result if isinstance(result, str) else jsoncodec.dumps(result).decode()
