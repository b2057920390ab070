"""One response of the fake Realtime provider: its events in order, paced, cancellable, and
broken where the script says."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from voicestack.testing.fake_openai.chat import split_arguments, split_text
from voicestack.testing.fake_openai.realtime_audio import encode, rate_of, reply_audio
from voicestack.testing.fake_openai.realtime_events import (
    SessionView,
    assistant_item,
    error_event,
    event,
    function_call_item,
    usage_object,
)
from voicestack.testing.fake_openai.realtime_script import Naming, ResponseScript
from voicestack.testing.fake_openai.wire import new_id


class Host(Protocol):
    """What a response needs from its connection."""

    naming: Naming
    view: SessionView
    input_text_tokens: int
    committed_audio_ms: int

    async def send(self, message: dict[str, Any]) -> None:
        """Send one server event (a no-op once the connection fell silent)."""

    def add_item(self, item_id: str, kind: str, call_id: str | None = None) -> str | None:
        """Register a new conversation item; return the previous item's id."""

    def set_item_audio(self, item_id: str, audio_ms: int) -> None:
        """Record how much of an item's audio has been sent."""

    def record_response(self, summary: dict[str, Any]) -> None:
        """Log how a response ended."""

    async def fault(self, kind: str, code: int) -> None:
        """Drop the socket ("drop"), close it ("close"), or fall silent ("silent")."""


class Stop(Exception):
    """The script broke the response off: the socket is gone, closed or silent."""


@dataclass
class ResponseRun:
    """Streams one scripted response on a connection."""

    host: Host
    plan: ResponseScript
    text: str
    id: str = field(default_factory=lambda: new_id("resp_", 21))
    reason: str | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _chunks: int = 0
    _output: list[dict[str, Any]] = field(default_factory=list)
    _spoken_words: list[str] = field(default_factory=list)
    _audio_ms: int = 0

    def _shape(self, status: str) -> dict[str, Any]:
        response: dict[str, Any] = {
            "object": "realtime.response",
            "id": self.id,
            "status": status,
            "status_details": None,
            "output": self._output if status != "in_progress" else [],
            "conversation_id": "conv_fake",
            "usage": None,
            "metadata": None,
        }
        if self.host.naming == "beta":
            output_format = self.host.view.session.get("output_audio_format", "pcm16")
            response.update(
                modalities=["audio", "text"], voice="alloy", output_audio_format=output_format
            )
        else:
            response.update(
                output_modalities=["audio"],
                max_output_tokens="inf",
                audio={"output": {"format": self.host.view.format_of_output(), "voice": "alloy"}},
            )
        return response

    def _event(self, ga_name: str, /, **fields: Any) -> dict[str, Any]:
        return event(ga_name, self.host.naming, **fields)

    async def _item_done(
        self, host: Host, index: int, previous: str | None, done: dict[str, Any]
    ) -> None:
        """Finish an output item: response.output_item.done (and GA's conversation.item.done)."""
        self._output.append(done)
        await host.send(
            self._event(
                "response.output_item.done", response_id=self.id, output_index=index, item=done
            )
        )
        if host.naming == "ga":
            await host.send(
                self._event("conversation.item.done", previous_item_id=previous, item=done)
            )

    async def cancel(self, reason: str) -> None:
        """Ask the response to stop at its next chunk with status cancelled."""
        self.reason = self.reason or reason
        self._wake.set()

    async def _pause(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), seconds)
        else:
            await asyncio.sleep(0)  # let the connection read client events between chunks

    async def _checkpoint(self) -> None:
        plan, n = self.plan, self._chunks
        if plan.error is not None and plan.error_after_chunks == n:
            await self.host.send(error_event(plan.error))
            self.reason = "failed"
        for kind, at in (
            ("drop", plan.drop_after_chunks),
            ("close", plan.close_after_chunks),
            ("silent", plan.silent_after_chunks),
        ):
            if at == n:
                await self.host.fault(kind, plan.close_code)
                raise Stop(kind)

    async def run(self, after_created: list[dict[str, Any]]) -> None:
        """Send the whole response; `after_created` events go right after response.created."""
        host = self.host
        await host.send(self._event("response.created", response=self._shape("in_progress")))
        for late in after_created:
            await host.send(late)
        try:
            await self._checkpoint()
            await self._pause(self.plan.first_delay_ms / 1000)
            wants_message = self.plan.text is not None or not self.plan.function_calls
            if wants_message and self.reason is None:
                await self._message(len(self._output))
            for call in self.plan.function_calls:
                if self.reason is not None:
                    break
                await self._function_call(
                    len(self._output), call.name, call.arguments_json(), call.call_id
                )
        except Stop:
            host.record_response(self._summary("broken"))
            return
        await self._done()

    async def _message(self, index: int) -> None:
        host, item_id = self.host, new_id("item_", 21)
        previous = host.add_item(item_id, "assistant")
        where = {"response_id": self.id, "item_id": item_id, "output_index": index}
        item = assistant_item(item_id, host.naming, "in_progress", None)
        await host.send(
            self._event(
                "response.output_item.added", response_id=self.id, output_index=index, item=item
            )
        )
        await host.send(
            self._event("conversation.item.added", previous_item_id=previous, item=item)
        )
        part = {"type": "audio", "transcript": ""}
        await host.send(
            self._event("response.content_part.added", **where, content_index=0, part=part)
        )
        await self._stream(item_id, where)
        transcript = "".join(self._spoken_words)
        where = {**where, "content_index": 0}
        await host.send(self._event("response.output_audio.done", **where))
        await host.send(
            self._event("response.output_audio_transcript.done", **where, transcript=transcript)
        )
        part = {"type": "audio", "transcript": transcript}
        await host.send(self._event("response.content_part.done", **where, part=part))
        status = "completed" if self.reason is None else "incomplete"
        done = assistant_item(item_id, host.naming, status, transcript)
        await self._item_done(host, index, previous, done)

    async def _stream(self, item_id: str, where: dict[str, Any]) -> None:
        host, plan = self.host, self.plan
        codec = host.view.codec("output")
        rate = rate_of(codec)
        # espeak-ng runs in a worker thread so other connections keep flowing meanwhile.
        samples = await asyncio.to_thread(reply_audio, self.text, plan.audio_ms, plan.sound, rate)
        per_chunk = rate * plan.chunk_ms // 1000
        chunks = [samples[i : i + per_chunk] for i in range(0, len(samples), per_chunk)]
        words = split_text(self.text)
        loop = asyncio.get_running_loop()
        started = loop.time()
        where = {**where, "content_index": 0}
        for i, chunk in enumerate(chunks or [np.zeros(0, dtype=np.int16)]):
            if i:
                await self._checkpoint()
            if self.reason is not None:
                return
            due = math.ceil(len(words) * (i + 1) / max(1, len(chunks)))
            for word in words[len(self._spoken_words) : due]:
                self._spoken_words.append(word)
                await host.send(
                    self._event("response.output_audio_transcript.delta", **where, delta=word)
                )
            if len(chunk):
                audio = base64.b64encode(encode(chunk, codec)).decode("ascii")
                await host.send(self._event("response.output_audio.delta", **where, delta=audio))
                self._audio_ms += len(chunk) * 1000 // rate
                host.set_item_audio(item_id, self._audio_ms)
            self._chunks += 1
            pace = self._audio_ms / 1000 / plan.speed if plan.speed else 0.0
            await self._pause(started + pace - loop.time() if plan.speed else 0.0)
        await self._checkpoint()

    async def _function_call(
        self, index: int, name: str, arguments: str, call_id: str | None
    ) -> None:
        host, item_id = self.host, new_id("item_", 21)
        call_id = call_id or new_id("call_", 16)
        previous = host.add_item(item_id, "function_call", call_id)
        item = function_call_item(item_id, call_id, name, "", "in_progress")
        await host.send(
            self._event(
                "response.output_item.added", response_id=self.id, output_index=index, item=item
            )
        )
        await host.send(
            self._event("conversation.item.added", previous_item_id=previous, item=item)
        )
        where = {
            "response_id": self.id,
            "item_id": item_id,
            "output_index": index,
            "call_id": call_id,
        }
        for piece in split_arguments(arguments):
            await host.send(
                self._event("response.function_call_arguments.delta", **where, delta=piece)
            )
        await host.send(
            self._event(
                "response.function_call_arguments.done", **where, name=name, arguments=arguments
            )
        )
        done = function_call_item(item_id, call_id, name, arguments, "completed")
        await self._item_done(host, index, previous, done)

    def _usage(self) -> dict[str, Any]:
        host, override = self.host, self.plan.usage
        counts = {
            "input_text_tokens": host.input_text_tokens,
            "input_audio_tokens": host.committed_audio_ms // 100,
            "output_text_tokens": len(self._spoken_words)
            + sum(1 for o in self._output if o["type"] == "function_call"),
            "output_audio_tokens": self._audio_ms // 50,
        }
        if override is not None:
            counts.update(
                override.model_dump(exclude_none=True, exclude={"input_tokens", "output_tokens"})
            )
        usage = usage_object(*counts.values())
        if override is not None:
            for key in ("input_tokens", "output_tokens"):
                if getattr(override, key) is not None:
                    usage[key] = getattr(override, key)
            usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        return usage

    def _summary(self, status: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": status,
            "reason": self.reason if status != "completed" else None,
            "audio_ms_sent": self._audio_ms,
            "transcript": "".join(self._spoken_words),
            "function_calls": [o["call_id"] for o in self._output if o["type"] == "function_call"],
        }

    async def _done(self) -> None:
        response = self._shape("completed")
        if self.reason == "failed" and self.plan.error is not None:
            error = self.plan.error.model_dump(exclude={"param"})
            response.update(status="failed", status_details={"type": "failed", "error": error})
        elif self.reason is not None:
            response.update(
                status="cancelled", status_details={"type": "cancelled", "reason": self.reason}
            )
        response["usage"] = self._usage()
        self.host.record_response(self._summary(response["status"]))
        await self.host.send(self._event("response.done", response=response))
