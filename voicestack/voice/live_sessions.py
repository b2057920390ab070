"""The live conversations of one server: each socket's session, the pipeline's or relayed to a
speech-to-speech model as the thread's agent says, a phone call's on a thread of its own, and
their wind-down when the server shuts down."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from voicestack.agent.agents import DEFAULT_AGENT, AgentProfile, Agents
from voicestack.agent.cost import Pricing
from voicestack.agent.reply_tools import Approval
from voicestack.config import Settings
from voicestack.identity import Caller
from voicestack.reactive.streams import Stream
from voicestack.store.store import Store
from voicestack.voice.provider import Transcriber
from voicestack.voice.realtime.client import VoiceClient
from voicestack.voice.realtime.records import StoreRecords
from voicestack.voice.realtime.session import SessionSettings, VoiceSession
from voicestack.voice.realtime.wire import ProtocolError, Start
from voicestack.voice.relay.client_secrets import mint_client_secret
from voicestack.voice.relay.context import RelayContext
from voicestack.voice.relay.provider import ProviderUnavailable
from voicestack.voice.relay.records import RepliesWithCalls, StoreRelayRecords, VoiceAgent
from voicestack.voice.relay.session import RelaySession
from voicestack.voice.relay.session_config import RelaySettings
from voicestack.voice.relay.tools import Approvals, RelayTools
from voicestack.voice.session_drain import SessionDrain
from voicestack.voice.telephony.calls import CallThread, start_call_thread
from voicestack.voice.telephony.media import CALL_AUDIO, CallClient, StreamStart

log = logging.getLogger(__name__)

# A live conversation: the pipeline's (VAD, transcription, chat, speech), or relayed to a
# speech-to-speech model (--voice-mode realtime); the sockets drive both the same way.
LiveSession = VoiceSession | RelaySession
# A thread's feed for a phone call's owner (the Runtime's open_thread_feed, without a viewer).
OpenCallFeed = Callable[[str], Awaitable[Stream]]


class LiveSessions:
    """Opens live conversations and ends them all, after their current sentence, at shutdown."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        transcriber: Transcriber,
        agents: Agents,
        relay_tools: RelayTools,
        pricing: Pricing,
        open_call_feed: OpenCallFeed,
    ) -> None:
        """Sessions use these parts of the server; `open_call_feed` follows a call's thread."""
        self._settings = settings
        self._store = store
        self._transcriber = transcriber
        self._agents = agents
        self._relay_tools = relay_tools
        self._replies_with_calls = RepliesWithCalls(relay_tools)
        self._pricing = pricing
        self._open_call_feed = open_call_feed
        self._drain = SessionDrain(settings.drain_s)

    def open_voice_session(
        self, thread_id: str, user: Caller | None, feed: Stream, start: Start, client: VoiceClient
    ) -> VoiceSession:
        """A live conversation on the thread, following `feed` (from `open_thread_feed`, which
        checked that `user` may see the thread); call `begin()` on it, and `close()` at the end.

        Raises ProtocolError (close 1001) once the server is shutting down.
        """
        self._drain.refuse_when_shutting_down()
        session = VoiceSession(
            thread_id=thread_id,
            records=self.records(thread_id, user),
            feed=feed,
            settings=SessionSettings.of(self._settings),
            start=start,
            client=client,
            forget=self._drain.discard,
        )
        self._drain.add(session)
        return session

    def relay_records(
        self, thread_id: str, user: Caller | None, wait_for_approval: Approval
    ) -> StoreRelayRecords:
        """Where a relayed conversation of `user` on the thread keeps its turns and replies:
        here; its function calls that need approval wait on `wait_for_approval`."""
        return StoreRelayRecords(
            store=self._store,
            thread_id=thread_id,
            author=user.id if user else None,
            model=self._settings.realtime_model,
            pricing=self._pricing,
            replies=self._replies_with_calls,
            wait_for_approval=wait_for_approval,
        )

    def records(self, thread_id: str, user: Caller | None) -> StoreRecords:
        """Where a conversation of `user` on the thread keeps its turns and replies: here."""
        return StoreRecords(thread_id, user, self._store, self._transcriber)

    async def _agent_of(self, thread_id: str) -> AgentProfile:
        agent_name = await self._store.read(
            lambda snap: snap.db().scalar("SELECT agent FROM threads WHERE id = ?", (thread_id,))
        )
        return self._agents.get(str(agent_name)) or self._agents.profiles[0]

    async def relay_agent(self, thread_id: str) -> VoiceAgent | None:
        """The thread's agent as a speech-to-speech provider is told of it; None when the
        agent talks through the pipeline."""
        agent = await self._agent_of(thread_id)
        if agent.voice_mode != "realtime":
            return None
        return VoiceAgent.of(self._relay_tools.offer(agent))

    def relay_settings(self) -> RelaySettings:
        """How relayed conversations run (the --realtime-* flags)."""
        return RelaySettings.from_settings(self._settings)

    @property
    def flush_ms(self) -> float:
        """How often a streaming reply's text is saved (--flush-ms)."""
        return self._settings.flush_ms

    async def edge_provider_key(self) -> str:
        """A key for one provider connection an edge opens: short-lived, minted with this
        server's key. Raises ProviderUnavailable when there is none: the provider mints none,
        or this server has no key for it (a provider that takes none may be reachable from
        this host alone, or carry its key in its URL, which an edge is never given)."""
        relay = self.relay_settings()
        if relay.url is None:
            raise ProviderUnavailable("no realtime provider is configured")
        if relay.api_key is None:
            raise ProviderUnavailable("this server has no key for the provider to mint one with")
        return await mint_client_secret(relay.url, relay.api_key, relay.model, relay.timeout_s)

    async def voice_mode(self, thread_id: str) -> str:
        """How a live conversation on the thread runs: `pipeline` (a VoiceSession) or
        `realtime` (relayed to a speech-to-speech model), as its agent says."""
        return _mode_of(await self._agent_of(thread_id))

    def call_voice_mode(self) -> str:
        """How a phone call's conversation runs (as voice_mode): as the agent of a new
        thread, the default one, talks."""
        return _mode_of(self._agents.get(DEFAULT_AGENT) or self._agents.profiles[0])

    async def open_live_session(
        self, thread_id: str, user: Caller | None, feed: Stream, start: Start, client: VoiceClient
    ) -> LiveSession:
        """A live conversation on the thread as its agent's voice mode says (--voice-mode, or
        the agent's `voice_mode`): the pipeline's VoiceSession, or a RelaySession to the realtime
        provider. As open_voice_session otherwise."""
        agent = await self._agent_of(thread_id)
        if agent.voice_mode != "realtime":
            return self.open_voice_session(thread_id, user, feed, start, client)
        self._drain.refuse_when_shutting_down()
        settings = self._settings
        relay = RelaySettings.from_settings(settings)
        approvals = Approvals(self._store)
        records = self.relay_records(thread_id, user, approvals.wait)

        async def provider_key() -> str | None:
            return relay.api_key

        context = RelayContext(
            thread_id=thread_id,
            agent=VoiceAgent.of(self._relay_tools.offer(agent)),
            records=records,
            start=start,
            client=client,
            settings=relay,
            flush_ms=settings.flush_ms,
            provider_key=provider_key,
            tool_call_seen=approvals.seen,
            forget=self._drain.discard,
        )
        session = RelaySession(context, feed)
        self._drain.add(session)
        return session

    async def open_call(self, start: StreamStart, client: CallClient) -> LiveSession | None:
        """The live conversation of a phone call's media stream, on a new thread owned by
        --twilio-user; call `begin()` on it, and `close()` at the end. None, with nothing
        created, when the stream's token is not good for its call.

        Raises ProtocolError (close 1001) once the server is shutting down.
        """
        # Before the token is spent: a call refused at shutdown leaves no empty thread behind.
        self._drain.refuse_when_shutting_down()
        owner_name = self._settings.twilio_user
        spent = await self._store.write(
            lambda db: start_call_thread(db, start.token, start.call_sid, owner_name)
        )
        call: CallThread | None = spent.value
        if call is None:
            return None
        feed = await self._open_call_feed(call.thread_id)
        try:
            session = await self.open_live_session(
                call.thread_id, call.owner, feed, CALL_AUDIO, client
            )
        except ProtocolError:
            feed.close()
            raise
        client.report = session.control
        return session

    def begin_wind_down(self) -> None:
        """Shutdown (call on the event loop, once is enough): refuse new conversations, and end
        each open one after its current sentence, within --drain-s."""
        self._drain.begin_wind_down()

    async def ended(self) -> None:
        """Wait (at most `--drain-s` and a second) until the wind-down has ended every live
        conversation."""
        await self._drain.ended()


def _mode_of(agent: AgentProfile) -> str:
    return "realtime" if agent.voice_mode == "realtime" else "pipeline"
