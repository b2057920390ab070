"""The Runtime ties a server together: store, loaded apps, function registry and hub."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from voicestack import jsoncodec
from voicestack.agent.feed import ThreadFeed
from voicestack.agent.llm import ChatProvider, ProviderSettings
from voicestack.agent.reply import AgentSettings
from voicestack.agent.runner import ReplyRunner
from voicestack.agent.threads import FUNCTIONS as AGENT_FUNCTIONS
from voicestack.agent.tool_loading import ToolSet, load_tools
from voicestack.config import Settings
from voicestack.functions.apps import App, load_entry_point_apps, load_module_app
from voicestack.functions.context import ActionCtx, Caller, MutationCtx, QueryCtx
from voicestack.functions.errors import FunctionError
from voicestack.functions.registry import Kind, Registry, ServerFunction
from voicestack.reactive.channel import FeedChannel, Outbox
from voicestack.reactive.hub import Hub
from voicestack.schema import ALL_MIGRATIONS
from voicestack.store.db import WriteDB
from voicestack.store.store import Store
from voicestack.voice.provider import Synthesizer, Transcriber
from voicestack.voice.speaker import SpeakerFactory

log = logging.getLogger(__name__)

# After the drain, how long the hub may take to push the replies' final events to the feeds.
FEED_FLUSH_S = 2.0


@dataclass(frozen=True, slots=True)
class CallResult:
    """A function's value (also as JSON) and the database version it reflects."""

    value: Any
    version: int
    value_json: bytes

    def response_body(self) -> bytes:
        """`{"value": ..., "version": N}` as the HTTP API answers a call."""
        return b'{"value":%s,"version":%d}' % (self.value_json, self.version)


class UnknownFunction(FunctionError):
    """No function of that name (and kind) is registered."""

    def __init__(self, name: str, kind: Kind | None = None, actual: Kind | None = None) -> None:
        if actual is not None and kind is not None:
            super().__init__(
                "wrong_function_kind",
                f"{name!r} is a {actual}, not a {kind}: call it at /api/{actual}/{name}.",
                400,
            )
        else:
            super().__init__(
                "unknown_function",
                f"No function is named {name!r}; GET /api/functions lists them.",
                404,
            )


class Runtime:
    """A running voicestack: call functions by name, subscribe to queries, close cleanly."""

    def __init__(
        self, settings: Settings, apps: list[App] | None = None, tools: ToolSet | None = None
    ) -> None:
        self.settings = settings
        self.registry = Registry()
        self.registry.add_all(AGENT_FUNCTIONS, "voicestack")
        self.tools = tools if tools is not None else load_tools()
        self.apps = [
            *self.tools.apps(),
            *(apps if apps is not None else self._load_apps(settings)),
        ]
        self.store = Store(
            settings.db,
            readers=settings.readers,
            autocheckpoint=not settings.no_autocheckpoint,
            log_keep=settings.change_log_keep,
            migrations=ALL_MIGRATIONS,
        )
        try:
            for app in self.apps:
                self.registry.add_all(app.functions, app.name)
                self.store.migrate_app(app.name, app.migrations)
        except BaseException:
            self.store.close()
            raise
        self.store.start()
        self.hub = Hub(self.store, settings.ping_s, settings.send_timeout_s)
        self.feed = ThreadFeed()
        self.hub.add_source(self.feed)
        api_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
        self.provider = ChatProvider(
            ProviderSettings(
                base_url=settings.openai_base_url,
                api_key=api_key,
                model=settings.model,
                temperature=settings.temperature,
                timeout_s=settings.provider_timeout_s,
                max_retries=settings.provider_retries,
            )
        )
        self.transcriber = Transcriber(self.provider, settings.transcribe_model)
        self.synthesizer = Synthesizer(
            self.provider, settings.speech_model, settings.voice, settings.speech_format
        )
        self.runner = ReplyRunner(
            self.store,
            self.provider,
            self.tools,
            AgentSettings(
                instructions=settings.instructions,
                context_messages=settings.context_messages,
                flush_ms=settings.flush_ms,
                max_steps=settings.max_steps,
                tool_timeout_s=settings.tool_timeout_s,
            ),
            self.query_value,
            self.mutation_value,
            speakers=SpeakerFactory(self.store, self.synthesizer),
        )
        self.hub.add_source(self.runner)
        self._drain: asyncio.Task[None] | None = None

    @staticmethod
    def _load_apps(settings: Settings) -> list[App]:
        apps = load_entry_point_apps()
        apps += [load_module_app(path) for path in settings.apps]
        return apps

    async def start(self) -> None:
        """Start the hub and the reply runner on the running event loop."""
        await self.hub.start()
        await self.runner.start()

    def function(self, name: str, kind: Kind) -> ServerFunction:
        """The registered function `name` of `kind`; raises UnknownFunction otherwise."""
        function = self.registry.get(name)
        if function is None:
            raise UnknownFunction(name)
        if function.kind != kind:
            raise UnknownFunction(name, kind, function.kind)
        return function

    async def query(self, name: str, args: Any, user: Caller | None) -> CallResult:
        """Run query `name` on a reader snapshot."""
        function = self.function(name, "query")
        parsed = function.parse_args(args)

        def run(snapshot: Any) -> CallResult:
            value = function.invoke(QueryCtx(snapshot.db(), user, snapshot.version), parsed)
            return CallResult(value, snapshot.version, jsoncodec.dumps(value))

        return await self.store.read(run)

    async def mutation(self, name: str, args: Any, user: Caller | None) -> CallResult:
        """Run mutation `name` in the next group commit; returns after COMMIT."""
        function = self.function(name, "mutation")
        parsed = function.parse_args(args)

        def run(db: WriteDB) -> tuple[Any, bytes]:
            value = function.invoke(MutationCtx(db, user), parsed)
            # Serialized inside the mutation's savepoint: a value that is not JSON rolls the
            # mutation back instead of committing rows the caller is then told failed.
            return value, jsoncodec.dumps(value)

        result = await self.store.write(run)
        value, value_json = result.value
        return CallResult(value, result.version, value_json)

    async def action(self, name: str, args: Any, user: Caller | None) -> CallResult:
        """Run action `name` on the event loop; its version is the newest after it returns."""
        function = self.function(name, "action")
        parsed = function.parse_args(args)
        ctx = ActionCtx(user, self.query_value, self.mutation_value)
        value = await function.invoke(ctx, parsed)
        value_json = jsoncodec.dumps(value)
        return CallResult(value, await self.store.read(lambda s: s.version), value_json)

    async def query_value(self, name: str, args: Any, user: Caller | None) -> Any:
        """The value of query `name` (for actions and tools)."""
        return (await self.query(name, args, user)).value

    async def mutation_value(self, name: str, args: Any, user: Caller | None) -> Any:
        """The value of mutation `name` after its commit (for actions and tools)."""
        return (await self.mutation(name, args, user)).value

    def begin_shutdown(self) -> None:
        """A shutdown signal arrived (call on the event loop): start the drain, once.

        Query watch streams end at once. Streaming replies get `--drain-s` seconds to finish
        while no new reply starts (pending ones stay pending for the next start); the rest are
        then interrupted with their text. Thread feeds stay open through the drain, so their
        clients see the replies' final `message` events, and end right after them.
        """
        if self._drain is None:
            self._drain = asyncio.get_running_loop().create_task(
                self._drain_replies(), name="voicestack-drain"
            )

    async def _drain_replies(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.hub.close_streams(_is_watch_stream)
        try:
            left = await self.runner.drain(self.settings.drain_s)
            if left:
                log.warning("interrupting %d replies still streaming after --drain-s", left)
            await self.runner.close()
            # Every final status is committed now: end the feeds once the hub has pushed them.
            version = await self.store.read(lambda snapshot: snapshot.version)
            deadline = loop.time() + FEED_FLUSH_S
            while self.hub.version < version and loop.time() < deadline:
                await asyncio.sleep(0.01)
        finally:
            self.hub.close_streams()  # whatever happened, no feed client is left hanging
        log.info("drained replies in %.1f s", loop.time() - started)

    async def close(self) -> None:
        """Stop replies (saved as interrupted), close streams, drain writes, close the file."""
        if self._drain is not None:
            with contextlib.suppress(Exception):
                await self._drain
        await self.runner.close()
        await self.hub.close()
        await self.provider.aclose()
        self.store.close()


def _is_watch_stream(outbox: Outbox) -> bool:
    return not isinstance(outbox, FeedChannel)
