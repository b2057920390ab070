"""One assistant reply: stream the model's answer into the thread, run its tool calls, finish.

The text is committed in coalesced deltas as it streams; tool calls become rows that move
pending → (awaiting_approval →) running → done | failed, and their results go back to the model
for the next step, up to `max_steps` (voicestack/agent/reply_tools.py runs them). Each step's
token counts are saved as they arrive (voicestack/agent/reply_parts.py). Whatever happens, the
reply ends with a final status and keeps every bit of text it streamed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any, Protocol, TypeVar

from voicestack.agent.agents import Agents
from voicestack.agent.context import build_context
from voicestack.agent.cost import Pricing
from voicestack.agent.handoff import instructions_of, transfer_note
from voicestack.agent.llm import (
    NOT_CONFIGURED_MESSAGE,
    CallOptions,
    ChatProvider,
    Finish,
    ProviderError,
    TextDelta,
    Usage,
)
from voicestack.agent.llm_calls import StreamLimitReached, StreamLimits, ToolCallRequest
from voicestack.agent.recall import with_recall
from voicestack.agent.records import emit_message
from voicestack.agent.reply_parts import add_step_usage, begin_step
from voicestack.agent.reply_state import (
    Claim,
    append_delta,
    finish_reply,
    still_streaming,
)
from voicestack.agent.reply_tools import (
    Approval,
    CallFunction,
    ReplyStopped,
    ReplyTools,
)
from voicestack.agent.stream import DeltaCoalescer
from voicestack.agent.tool_loading import ToolSet
from voicestack.config import Settings
from voicestack.store.db import WriteDB
from voicestack.store.store import Store

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class AgentSettings:
    """How replies are made."""

    instructions: str = "You are a helpful assistant."
    context_messages: int = 50
    flush_ms: float = 50.0
    max_steps: int = 8
    max_handoffs: int = 3
    tool_timeout_s: float = 60.0
    reply_timeout_s: float = 600.0
    max_reply_chars: int = 500_000
    max_tool_calls_per_step: int = 16

    @classmethod
    def from_settings(cls, settings: Settings) -> AgentSettings:
        """The server settings' values of these fields (the names are the same)."""
        return cls(**{field.name: getattr(settings, field.name) for field in fields(cls)})


class ReplySpeaker(Protocol):
    """Speaks a reply as its text is saved (voicestack.voice.speaker.Speaker)."""

    def feed(self, text: str) -> None:
        """Take the next saved piece of text; must return at once."""

    async def drain(self) -> None:
        """Finish speaking everything fed so far."""

    def discard(self) -> None:
        """Stop speaking at once."""


SpeakerFactory = Callable[[Claim], ReplySpeaker | None]


class Reply:
    """Runs one claimed reply to its end."""

    def __init__(
        self,
        claim: Claim,
        *,
        store: Store,
        provider: ChatProvider,
        tools: ToolSet,
        agents: Agents,
        settings: AgentSettings,
        wait_for_approval: Approval,
        run_query: CallFunction,
        run_mutation: CallFunction,
        speaker: ReplySpeaker | None = None,
        pricing: Pricing | None = None,
    ) -> None:
        self.claim = claim
        self._pricing = pricing
        self._store = store
        self._provider = provider
        self._settings = settings
        self._seq = 0
        self._started = time.monotonic()
        self._calls = ReplyTools(
            claim,
            store=store,
            tools=tools,
            agents=agents,
            settings=settings,
            write_output=self._write_output,
            deadline_paused=self._deadline_paused,
            wait_for_approval=wait_for_approval,
            run_query=run_query,
            run_mutation=run_mutation,
        )
        self._coalescer = DeltaCoalescer(self._save_delta, settings.flush_ms)
        self._speaker = speaker
        self._announced = False  # the `streaming` message event went out with the first output
        self.finishing = False
        self._chars = 0  # text and tool-call arguments streamed, against --max-reply-chars
        self._text_chars = 0
        self._deadline: asyncio.Timeout | None = None

    async def _save_delta(self, text: str) -> None:
        self._seq += 1
        seq = self._seq
        saved = await self._write_output(lambda db: append_delta(db, self.claim, text, seq))
        if not saved:
            raise ReplyStopped
        if self._speaker is not None:
            self._speaker.feed(text)

    async def _write_output(self, write: Callable[[WriteDB], T]) -> T:
        """Commit `write`, some output of the reply (text or tool calls). The first one also
        carries the reply's `streaming` message event, which the claim itself does not send:
        a watcher then gets both in one hub batch, one fan-out fewer per reply."""
        announce = not self._announced
        message_id = self.claim.message_id

        def announced_then(db: WriteDB) -> T:
            if announce and still_streaming(db, message_id):
                emit_message(db, message_id)
            return write(db)

        value = (await self._store.write(announced_then)).value
        self._announced = True
        return value

    async def run(self) -> None:
        """Stream, call tools, and finish with complete, failed or interrupted."""
        try:
            await self._steps_in_time()
            if self._speaker is None:
                await self._finish("complete", last_piece=await self._coalescer.take_rest())
            else:
                await self._coalescer.close()  # spoken before the reply ends
                await self._speaker.drain()
                await self._finish("complete")
        except ReplyStopped:
            self._coalescer.discard_timer()
            await self._finish("interrupted")
        except ProviderError as exc:
            # The reason is on the message too; an operator reads it here, beside the others.
            log.warning(
                "reply failed: thread %s, message %s: %s: %s",
                self.claim.thread_id,
                self.claim.message_id,
                exc.code,
                exc.message,
            )
            await self._keep_partial_text()
            await self._finish("failed", (exc.code, exc.message))
        except asyncio.CancelledError:
            # Shutdown or a cancel: save what streamed, then let the cancellation through.
            await asyncio.shield(self._stop_after_cancel())
            raise
        except Exception as exc:
            log.exception("reply %s failed", self.claim.message_id)
            await self._keep_partial_text()
            reason = f"The reply failed ({type(exc).__name__}); the server log has details."
            await self._finish("failed", ("internal_error", reason))

    async def _stop_after_cancel(self) -> None:
        await self._keep_partial_text()
        await self._finish(
            "interrupted", ("server_stopped", "The server stopped during the reply.")
        )

    async def _keep_partial_text(self) -> None:
        self._coalescer.discard_timer()
        with contextlib.suppress(ReplyStopped, Exception):
            await self._coalescer.close()

    async def _finish(
        self, status: str, error: tuple[str, str] | None = None, last_piece: str = ""
    ) -> None:
        """End the reply with `status`. `last_piece`, text not saved yet, is saved in the same
        commit: a watcher gets the reply's last delta and its end in one batch, a fan-out
        fewer per reply (and, for a reply that came all at once, its `streaming` event too)."""
        self.finishing = True
        if self._speaker is not None:
            self._speaker.discard()  # drained already when complete; stopped otherwise
        wall_ms = int((time.monotonic() - self._started) * 1000)

        def end(db: WriteDB) -> None:
            finish_reply(db, self.claim, status, wall_ms, error, self._pricing)

        if not last_piece:
            await self._store.write(end)
            return
        seq = self._seq + 1

        def last_piece_then_end(db: WriteDB) -> None:
            # Not saved when the reply was stopped meanwhile; the end then keeps that status.
            append_delta(db, self.claim, last_piece, seq)
            end(db)

        writing = asyncio.ensure_future(self._write_output(last_piece_then_end))
        try:
            await asyncio.shield(writing)
        except asyncio.CancelledError:
            # A cancel (a shutdown) waits for the commit, which may already be under way,
            # rather than leave the piece's fate unknown.
            with contextlib.suppress(Exception):
                await writing
            raise
        finally:
            if writing.done():
                self._settle_last_piece(writing, seq, last_piece)

    def _settle_last_piece(self, writing: asyncio.Future[None], seq: int, piece: str) -> None:
        """The last piece is saved as delta `seq`, or, if its write failed (and rolled back),
        goes back to the coalescer, for the failed reply to keep."""
        if writing.cancelled() or writing.exception() is not None:
            self._coalescer.give_back(piece)
        else:
            self._seq = seq

    async def _steps_in_time(self) -> None:
        limit = self._settings.reply_timeout_s
        try:
            async with asyncio.timeout(limit) as self._deadline:
                await self._steps()
        except TimeoutError:
            if self._deadline is None or not self._deadline.expired():
                raise
            message = (
                f"The reply ran past its {limit:g} s limit (--reply-timeout-s) and was stopped."
            )
            raise ProviderError("reply_timeout", message) from None

    @contextlib.contextmanager
    def _deadline_paused(self) -> Iterator[None]:
        """Stop the reply's clock while a person decides: an approval may take any time."""
        deadline, loop = self._deadline, asyncio.get_running_loop()
        when = deadline.when() if deadline is not None else None
        if deadline is None or when is None:
            yield
            return
        left = when - loop.time()
        deadline.reschedule(None)
        try:
            yield
        finally:
            deadline.reschedule(loop.time() + left)

    async def _steps(self) -> None:
        if not self._provider.configured:
            raise ProviderError("provider_not_configured", NOT_CONFIGURED_MESSAGE)
        agent = self._calls.answer_as(self.claim.agent)
        messages = await self._store.read(
            lambda snap: build_context(
                snap.db(),
                self.claim.thread_id,
                self.claim.position,
                agent.instructions,
                self._settings.context_messages,
            )
        )
        messages = await with_recall(
            self._store,
            messages,
            message_id=self.claim.message_id,
            thread_id=self.claim.thread_id,
            user_id=self.claim.author,
            limit=agent.recall,
        )
        step = 0
        agent_step = 0  # each agent the reply hands off to gets its own --max-steps
        while True:
            step += 1
            agent_step += 1
            # The last step offers no tools, so the model has to answer in words.
            last = agent_step >= agent.max_steps
            specs = self._calls.offered().openai_specs() if not last else []
            calls, finish = await self._stream_step(messages, specs or None)
            if calls:
                await self._coalescer.close()  # the text before the calls, in its place
            _check_finish(finish)
            if not calls and not self._text_chars:
                message = "The model provider ended the reply without any text or tool calls."
                raise ProviderError("empty_reply", message)
            if not calls:
                return  # the text still buffered is saved with the reply's end
            if last:
                # Its result could never reach the model: record the calls, run none.
                await self._calls.refuse_calls(step, calls)
                return
            messages += await self._calls.run_calls(step, calls)
            now_answering = self._calls.offered().agent
            if now_answering is not agent:  # handed off: go on as the new agent
                messages = instructions_of(messages, agent, now_answering)
                messages.append({"role": "system", "content": transfer_note(now_answering.name)})
                agent, agent_step = now_answering, 0

    async def _save_usage(self, usage: Usage) -> None:
        """The step's token counts, on the reply's row as they come, whatever its status."""
        message_id = self.claim.message_id
        prompt, completion = usage.prompt_tokens, usage.completion_tokens
        await self._store.write(lambda db: add_step_usage(db, message_id, prompt, completion))

    async def _stream_step(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> tuple[list[ToolCallRequest], str]:
        """The step's tool calls and finish reason, its text saved as it streams."""
        settings = self._settings
        limits = StreamLimits(
            settings.max_reply_chars - self._chars, settings.max_tool_calls_per_step
        )
        calls: list[ToolCallRequest] = []
        finish = "stop"
        agent = self._calls.offered().agent
        options = CallOptions(agent.model, agent.temperature)
        message_id = self.claim.message_id
        # Counted unreported as the call starts, so a step cut before its usage arrives stays
        # counted; submitted, not awaited, so the call (and a live turn's first word) does not
        # wait for a commit. The writer commits in order: before the step's usage.
        begun = asyncio.wrap_future(
            self._store.writer.submit(lambda db: begin_step(db, message_id))
        )
        try:
            async for event in self._provider.stream(messages, tools, limits, options):
                if isinstance(event, TextDelta):
                    self._chars += len(event.text)
                    self._text_chars += len(event.text)
                    await self._coalescer.add(event.text)
                elif isinstance(event, ToolCallRequest):
                    self._chars += len(event.name) + len(event.arguments)
                    calls.append(event)
                elif isinstance(event, Usage):
                    await self._save_usage(event)
                elif isinstance(event, Finish):
                    finish = event.reason
        except StreamLimitReached as exc:
            begun.add_done_callback(_outcome_seen)
            raise _limit_error(exc.what, settings) from None
        except BaseException:
            begun.add_done_callback(_outcome_seen)
            raise
        await begun
        return calls, finish


def _outcome_seen(future: asyncio.Future[Any]) -> None:
    """Retrieve a write's outcome that no one awaits any more (the step ended in an error)."""
    if not future.cancelled() and future.exception() is not None:
        log.warning("could not count a step of a reply: %s", future.exception())


def _check_finish(reason: str) -> None:
    """Raise for a step the model did not end of its own accord: its text is kept, its calls
    (possibly cut short) are not run."""
    if reason == "length":
        message = "The model stopped at its output token limit (finish_reason length): the reply"
        raise ProviderError("reply_truncated", f"{message} is cut short.")
    if reason == "content_filter":
        message = "The model provider's content filter stopped the reply (finish_reason"
        raise ProviderError("content_filtered", f"{message} content_filter).")


def _limit_error(what: str, settings: AgentSettings) -> ProviderError:
    if what == "tool_calls":
        limit = settings.max_tool_calls_per_step
        message = f"The model asked for more than {limit} tool calls in one step"
        return ProviderError(
            "too_many_tool_calls", f"{message} (--max-tool-calls-per-step); none was run."
        )
    limit = settings.max_reply_chars
    message = f"The reply reached its {limit}-character limit (--max-reply-chars) and was stopped."
    return ProviderError("reply_too_long", message)
