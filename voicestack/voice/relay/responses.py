"""What the provider's responses mean for the reply and the thread.

A response becomes the assistant message (`reply_started`), its transcript saved in coalesced
deltas, its audio forwarded to the client (`reply_audio`, then binary frames), its usage on the
message; it ends `complete` at `response.done`, and `reply_stopped` follows once its audio has
played. Function calls run as tool-call rows (tools.py); their outputs go back, then
`response.create`, and the next response writes the same message. A provider `error` or a
failed response fails the turn (TurnFailed); an error a barge-in caused is only logged.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from voicestack.agent.reply_state import HEARD_CUT
from voicestack.agent.reply_tools import ReplyStopped
from voicestack.voice.relay.context import TurnFailed
from voicestack.voice.relay.events import (
    HARMLESS_ERRORS,
    error_of,
    function_output,
    is_aftermath,
    response_status,
    usage_of,
)
from voicestack.voice.relay.provider import ProviderGone, ProviderLink
from voicestack.voice.relay.reply import RelayReply
from voicestack.voice.relay.tools import call_request
from voicestack.voice.relay.turn_state import TurnState

log = logging.getLogger(__name__)


class ResponseEvents(TurnState):
    """The provider's response events, applied to the conversation's replies."""

    def _of(self, received: dict[str, Any]) -> RelayReply | None:
        """The reply a response event belongs to, if it is still being spoken."""
        response_id = received.get("response_id")
        reply = self._responses.get(response_id) if isinstance(response_id, str) else self._reply
        return reply if reply is not None and not reply.cut else None

    async def _response_created(self, received: dict[str, Any]) -> None:
        response = received.get("response")
        response_id = response.get("id") if isinstance(response, dict) else None
        if not isinstance(response_id, str):
            return
        self._expecting = False
        reply = self._reply
        if reply is None or reply.ended:
            if reply is not None:  # a reply still playing out: the new one replaces it
                await self._release(reply)
            reply = await self._open_reply()
        reply.response_id, reply.responding = response_id, True
        reply.step += 1
        self._responses[response_id] = reply
        await self._records.begin_response(reply.message_id)

    def _item_added(self, received: dict[str, Any]) -> None:
        reply, item = self._of(received), received.get("item")
        if (
            reply is not None
            and isinstance(item, dict)
            and item.get("type") == "message"
            and isinstance(item.get("id"), str)
        ):
            reply.audio.begin_item(item["id"])

    async def _audio(self, received: dict[str, Any], audio: bytes, last: bool = False) -> None:
        reply = self._of(received)
        if reply is None or reply is not self._reply:
            return
        if isinstance(received.get("item_id"), str):
            reply.audio.begin_item(received["item_id"])
        await reply.forward(self._client, reply.audio.convert(audio, last=last))

    async def _transcript(self, received: dict[str, Any], text: str) -> None:
        reply = self._of(received)
        if reply is not None and text:
            await reply.said(text)

    def _function_call(self, received: dict[str, Any]) -> None:
        reply = self._of(received)
        item = received.get("item")
        if received["type"] == "response.output_item.done" and (
            not isinstance(item, dict) or item.get("type") != "function_call"
        ):
            return
        request = call_request(received)
        if reply is not None and request is not None:
            reply.add_call(request)

    async def _response_done(self, received: dict[str, Any], link: ProviderLink) -> None:
        response = received.get("response")
        response_id = response.get("id") if isinstance(response, dict) else None
        reply = self._responses.pop(response_id, None) if isinstance(response_id, str) else None
        if reply is None:
            return
        reply.responding = False
        await self._records.response_usage(reply.message_id, usage_of(received))
        status = response_status(received)
        if reply.cut and not reply.cut_saved:
            return  # the interrupt under way saves the cut, then ends the reply
        if reply.cut or reply.ended:
            await self._end(reply, "interrupted")
            return
        if status == "failed":
            code, message = error_of(received)
            raise TurnFailed("realtime_error", f"{message} ({code})")
        if status == "cancelled":  # the provider stopped it on its own: as a barge-in
            if self._reply is reply:
                await self.interrupt(link, HEARD_CUT)
            await self._end(reply, "interrupted")
            return
        if reply.requests:
            reply.tools = self._spawn(self._run_calls(reply, link), "tools")
            return
        with contextlib.suppress(Exception):
            await reply.text.close()
        await self._end(reply, "complete")
        self.finished_turns += 1
        self._spawn(self._play_out(reply), "playout")

    async def _run_calls(self, reply: RelayReply, link: ProviderLink) -> None:
        requests, reply.requests = reply.requests, []
        try:
            results = await self._records.run_calls(reply.claim, reply.agent, reply.step, requests)
        except ReplyStopped:
            return
        except Exception:
            log.exception("function calls of relayed reply %s failed", reply.message_id)
            await self.fail_turn("internal_error", "The function calls failed; see the log.")
            return
        with contextlib.suppress(ProviderGone):
            reply.agent = results.agent.name
            if results.agent != self._agent:  # handed off: the new agent answers
                self._agent = results.agent
                await link.send(self.session_update())
            for call_id, output in results.outputs:
                await link.send(function_output(call_id, output))
            if self._reply is reply:
                self._expecting = True  # set first: the answer may come while the send runs
                await link.send({"type": "response.create"})

    async def _error(self, received: dict[str, Any]) -> None:
        code, message = error_of(received)
        if code in HARMLESS_ERRORS or is_aftermath(received):
            log.info("realtime provider, after a barge-in: %s (%s)", message, code)
            return
        log.warning(
            "realtime provider error on %s: %s (%s)", self._context.thread_id, message, code
        )
        if self.waiting or (self._reply is not None and not self._reply.ended):
            raise TurnFailed("realtime_error", f"{message} ({code})")
        await self._send("error", code="realtime_error", message=f"{message} ({code})")
