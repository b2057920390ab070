"""The Runtime ties a server together: store, loaded apps, function registry, hub, access guard,
and (while this process leads the database file) the reply runner and the job scheduler.

It is the composition root: it registers the thread feed, the reply runner, the scheduler and
the access guard with the hub, and opens the event streams the HTTP routes send."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from voicestack import jsoncodec
from voicestack.agent.agents import AgentDefaults, build_agents, install_agents
from voicestack.agent.app_threads import ThreadsInAction, ThreadsInMutation, ThreadsInQuery
from voicestack.agent.cost import Pricing, install_pricing
from voicestack.agent.feed import ACCESS_TABLES as THREAD_ACCESS_TABLES
from voicestack.agent.feed import ThreadFeed, open_thread_feed, read_catch_up, threads_changed
from voicestack.agent.llm import ChatProvider
from voicestack.agent.memory_service import open_memory
from voicestack.agent.reply import AgentSettings
from voicestack.agent.reply_ends import ReplyEnds
from voicestack.agent.runner import ReplyRunner
from voicestack.agent.search_index import SEARCH_QUERIES, SearchIndexer, index_waiting
from voicestack.agent.shared_feeds import SharedFeeds
from voicestack.agent.threads import FUNCTIONS as AGENT_FUNCTIONS
from voicestack.agent.tool_loading import ToolSet, load_tools
from voicestack.config import Settings
from voicestack.functions.apps import App, load_entry_point_apps, load_module_app
from voicestack.functions.calls import CallResult, UnknownFunction
from voicestack.functions.context import ActionCtx, MutationCtx, QueryCtx, use_query_threads
from voicestack.functions.errors import FunctionError
from voicestack.functions.registry import Kind, Registry, ServerFunction
from voicestack.functions.timings import MutationTimings
from voicestack.identity import Caller
from voicestack.reactive.access import AccessGuard, Viewer
from voicestack.reactive.channel import FeedChannel, Outbox
from voicestack.reactive.hub import Hub
from voicestack.reactive.streams import Stream, WatchQuery, open_watch
from voicestack.scheduler.context import ActionScheduler, JobPlanner, MutationScheduler
from voicestack.scheduler.functions import FUNCTIONS as SCHEDULER_FUNCTIONS
from voicestack.scheduler.jobs import JobRun
from voicestack.scheduler.runner import Scheduler
from voicestack.schema import ALL_MIGRATIONS
from voicestack.store.db import ReadDB, WriteDB
from voicestack.store.leader import LeaderLease
from voicestack.store.store import Store
from voicestack.voice.capabilities import (
    chat_provider_settings,
    speech_provider_settings,
    transcription_provider_settings,
)
from voicestack.voice.live_sessions import LiveSessions
from voicestack.voice.provider import Synthesizer, Transcriber
from voicestack.voice.relay.tools import RelayTools
from voicestack.voice.speaker import SpeakerFactory
from voicestack.voice.telephony.calls import CallSlots

log = logging.getLogger(__name__)

# After the drain, how long the hub may take to push the replies' final events to the feeds.
FEED_FLUSH_S = 2.0


class Runtime:
    """A running voicestack: call functions by name, subscribe to queries, close cleanly."""

    def __init__(
        self, settings: Settings, apps: list[App] | None = None, tools: ToolSet | None = None
    ) -> None:
        self.settings = settings
        self.registry = Registry()
        self._timings = MutationTimings()
        self.registry.add_all(AGENT_FUNCTIONS, "voicestack")
        self.registry.add_all(SCHEDULER_FUNCTIONS, "voicestack")
        self.tools = tools if tools is not None else load_tools()
        self.apps = [
            *self.tools.apps(),
            *(apps if apps is not None else self._load_apps(settings)),
        ]
        self.agents = build_agents(
            AgentDefaults.from_settings(settings),
            settings.agents,
            self.apps,
            (tool.name for tool in self.tools.tools),
            (failure.entry_point for failure in self.tools.failures),
        )
        install_agents(self.agents)
        self.pricing = Pricing.from_settings(settings)
        install_pricing(self.pricing)
        use_query_threads(ThreadsInQuery)
        self.store = Store(
            settings.db,
            readers=settings.readers,
            autocheckpoint=not settings.no_autocheckpoint,
            log_keep=settings.change_log_keep,
            migrations=ALL_MIGRATIONS,
        )
        crons = [cron for app in self.apps for cron in app.crons]
        try:
            for app in self.apps:
                self.registry.add_all(app.functions, app.name)
                self.store.migrate_app(app.name, app.migrations)
            for cron in crons:
                self._check_job(cron.name, cron.args)  # a schedule that could never run: refuse
        except BaseException:
            self.store.close()
            raise
        self.store.start()
        self.memory = open_memory(self.store, settings)
        self.hub = Hub(self.store, settings.ping_s, settings.send_timeout_s)
        self.access = AccessGuard(self.store, THREAD_ACCESS_TABLES, threads_changed)
        self.hub.add_observer(self.access, gate=True)
        self.feed = ThreadFeed()
        self.hub.add_feed(self.feed)
        self.shared_feeds = SharedFeeds(self.hub, self.access, self.store, self.feed)
        self.provider = ChatProvider(chat_provider_settings(settings))
        # A provider per capability, each with its own client, so errors name the one that failed.
        self.transcription_provider = ChatProvider(transcription_provider_settings(settings))
        self.speech_provider = ChatProvider(speech_provider_settings(settings))
        self.transcriber = Transcriber(self.transcription_provider, settings.transcribe_model)
        self.synthesizer = Synthesizer(
            self.speech_provider, settings.speech_model, settings.voice, settings.speech_format
        )
        self.runner = ReplyRunner(
            self.store,
            self.provider,
            self.tools,
            self.agents,
            AgentSettings.from_settings(settings),
            self.query_value,
            self.mutation_value,
            speakers=SpeakerFactory(self.store, self.synthesizer, self.agents),
            pricing=self.pricing,
        )
        self.hub.add_observer(self.runner)
        self.reply_ends = ReplyEnds(self.store)  # `await ctx.threads.generate(...)` waits on it
        self.hub.add_observer(self.reply_ends)
        self.search_index = SearchIndexer(self.store)
        self.scheduler = Scheduler(
            self.store, self._run_job, crons, timeout_s=settings.job_timeout_s
        )
        self.hub.add_observer(self.scheduler)
        self.leader = LeaderLease(settings.db)
        self._drain: asyncio.Task[None] | None = None
        self.call_slots = CallSlots(settings.max_calls)
        relay_tools = RelayTools(
            store=self.store,
            tools=self.tools,
            agents=self.agents,
            settings=AgentSettings.from_settings(settings),
            run_query=self.query_value,
            run_mutation=self.mutation_value,
        )
        self.live = LiveSessions(
            settings,
            self.store,
            self.transcriber,
            self.agents,
            relay_tools,
            self.pricing,
            lambda thread_id: self.open_thread_feed(thread_id, None, None),
        )

    async def health_details(self) -> dict[str, Any]:
        """What GET /healthz?details=1 adds: the state of memory, and the thread streams edges
        share on this process (voicestack/agent/shared_feeds.py) with their members."""
        return {
            "memory": await self.store.read(lambda s: self.memory.details(s.db())),
            "sharedFeeds": {
                "streams": self.shared_feeds.streams,
                "members": self.shared_feeds.members,
            },
        }

    @staticmethod
    def _load_apps(settings: Settings) -> list[App]:
        apps = load_entry_point_apps()
        apps += [load_module_app(path) for path in settings.apps]
        return apps

    async def start(self) -> None:
        """Start the hub; run replies and jobs now if this process leads the database file, or
        as soon as it takes over from the leader."""
        await self.hub.start()
        self.search_index.start()
        await self.leader.acquire(self._lead)

    async def _lead(self) -> None:
        if self._drain is not None:
            return  # took the lease while shutting down: leave the work to the next leader
        await self.runner.start()
        await self.scheduler.start()

    def function(self, name: str, kind: Kind) -> ServerFunction:
        """The registered function `name` of `kind`; raises UnknownFunction otherwise."""
        function = self.registry.get(name)
        if function is None:
            raise UnknownFunction(name)
        if function.kind != kind:
            raise UnknownFunction(name, kind, function.kind)
        return function

    async def query(self, name: str, args: Any, user: Caller | None) -> CallResult:
        """Run query `name` on a reader snapshot (a search, once every message committed before
        it is indexed)."""
        function = self.function(name, "query")
        parsed = function.parse_args(args)
        if name in SEARCH_QUERIES:
            await index_waiting(self.store)

        def run(snapshot: Any) -> CallResult:
            value = function.invoke(QueryCtx(snapshot.db(), user, snapshot.version), parsed)
            return CallResult(value, snapshot.version, jsoncodec.dumps(value))

        return await self.store.read(run)

    async def mutation(self, name: str, args: Any, user: Caller | None) -> CallResult:
        """Run mutation `name` in the next group commit; returns after COMMIT."""
        function = self.function(name, "mutation")
        parsed = function.parse_args(args)

        def run(db: WriteDB) -> tuple[Any, bytes]:
            started = time.perf_counter()
            try:
                value = function.invoke(self._mutation_ctx(db, user), parsed)
                # Serialized inside the mutation's savepoint: a value that is not JSON rolls
                # the mutation back instead of committing rows the caller is then told failed.
                return value, jsoncodec.dumps(value)
            finally:
                self._timings.record(name, time.perf_counter() - started)

        cost = self._timings.loop_cost(name)
        result = await self.store.write(run, on_loop=cost is not None, slow_s=cost or 0.0)
        value, value_json = result.value
        return CallResult(value, result.version, value_json)

    async def action(self, name: str, args: Any, user: Caller | None) -> CallResult:
        """Run action `name` on the event loop; its version is the newest after it returns."""
        function = self.function(name, "action")
        parsed = function.parse_args(args)
        value = await function.invoke(self._action_ctx(user), parsed)
        value_json = jsoncodec.dumps(value)
        return CallResult(value, await self.store.read(lambda s: s.version), value_json)

    def _mutation_ctx(
        self, db: WriteDB, user: Caller | None, job: JobRun | None = None
    ) -> MutationCtx:
        scheduler = MutationScheduler(db, JobPlanner(self._check_job, user))
        return MutationCtx(db, user, scheduler, job, ThreadsInMutation(db, user))

    def _action_ctx(self, user: Caller | None, job: JobRun | None = None) -> ActionCtx:
        scheduler = ActionScheduler(self._write_value, JobPlanner(self._check_job, user))
        threads = ThreadsInAction(self._write_value, self._read_value, self.reply_ends, user)
        return ActionCtx(user, self.query_value, self.mutation_value, scheduler, job, threads)

    async def _write_value(self, fn: Callable[[WriteDB], Any]) -> Any:
        return (await self.store.write(fn)).value

    async def _read_value(self, fn: Callable[[ReadDB], Any]) -> Any:
        return await self.store.read(lambda snapshot: fn(snapshot.db()))

    def _job_function(self, name: str) -> ServerFunction:
        """The mutation or action a job named `name` runs; `unknown_job_function` otherwise."""
        function = self.registry.get(name)
        if function is None or function.kind == "query":
            raise FunctionError(
                "unknown_job_function",
                f"Cannot schedule {name!r}: jobs run a registered mutation or action.",
            )
        return function

    def _check_job(self, name: str, args: Any) -> Any:
        """Refuse a job whose function is not a mutation or action, or whose args do not fit."""
        function = self._job_function(name)
        try:
            function.parse_args(args)
        except ValidationError as exc:
            raise FunctionError(
                "invalid_job_args", f"The arguments do not fit {name!r}: {exc.errors()[0]['msg']}."
            ) from None
        return args

    async def _run_job(self, run: JobRun, finish: Callable[[WriteDB], None]) -> None:
        """Run one claimed job as the user who scheduled it; `finish(db)` commits with a
        mutation's own writes, or right after an action returns."""
        function = self._job_function(run.name)
        parsed = function.parse_args(run.args)
        if function.kind == "mutation":

            def work(db: WriteDB) -> None:
                function.invoke(self._mutation_ctx(db, run.user, run), parsed)
                finish(db)

            await self.store.write(work)
        else:
            await function.invoke(self._action_ctx(run.user, run), parsed)
            await self.store.write(finish)

    async def watch(
        self,
        queries: list[WatchQuery],
        viewer: Viewer | None,
        last_version: int | None,
        multi: bool,
    ) -> Stream:
        """A stream of the queries' values, ended when the viewer's access is revoked; raises
        the first query's refusal, if any refuses."""
        if any(query.function.name in SEARCH_QUERIES for query in queries):
            await index_waiting(self.store)  # its first value finds every message before it
        return await open_watch(self.hub, self.access, queries, viewer, last_version, multi)

    async def open_thread_feed(
        self, thread_id: str, viewer: Viewer | None, cursor: int | None, deflate: bool = False
    ) -> Stream:
        """A stream of the thread's events after event `cursor` (None: a snapshot first), ended
        when the viewer loses access to it; raises `thread_not_found` if they cannot see it.
        `deflate`: its bytes are a zlib stream (`Content-Encoding: deflate`), else plain SSE."""
        return await open_thread_feed(
            self.hub, self.access, self.store, self.feed, thread_id, viewer, cursor, deflate
        )

    async def feed_catch_up(
        self, thread_id: str, viewer: Viewer | None, cursor: int | None
    ) -> tuple[bytes, int]:
        """What `open_thread_feed` would send first (the snapshot, or the events after
        `cursor`) as SSE bytes, with the event id live events continue after; raises
        `thread_not_found` if the viewer cannot see the thread."""
        user = viewer.caller if viewer is not None else None
        return await read_catch_up(self.store, self.feed, thread_id, user, cursor)

    async def voice_sessions_ended(self) -> None:
        """Wait (at most `--drain-s` and a second) until the shutdown has ended every live
        conversation; the HTTP server closes its connections after this."""
        await self.live.ended()

    async def query_value(self, name: str, args: Any, user: Caller | None) -> Any:
        """The value of query `name` (for actions and tools)."""
        return (await self.query(name, args, user)).value

    async def mutation_value(self, name: str, args: Any, user: Caller | None) -> Any:
        """The value of mutation `name` after its commit (for actions and tools)."""
        return (await self.mutation(name, args, user)).value

    @property
    def shutting_down(self) -> bool:
        """Whether a shutdown signal has arrived (the drain has begun)."""
        return self._drain is not None

    def begin_shutdown(self) -> None:
        """A shutdown signal arrived (call on the event loop): start the drain, once.

        Query watch streams end at once. Streaming replies and running jobs get `--drain-s`
        seconds to finish while no new reply or job starts (pending ones stay pending for the
        next start); the replies left are then interrupted with their text, the jobs left are
        queued again. Thread feeds stay open through the drain, so their
        clients see the replies' final `message` events, and end right after them.
        """
        if self._drain is None:
            self.live.begin_wind_down()
            loop = asyncio.get_running_loop()
            self._drain = loop.create_task(self._drain_replies(), name="voicestack-drain")

    async def _drain_replies(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.hub.close_streams(_is_watch_stream)
        try:
            await self.leader.stop_waiting()
            left, jobs_left = await asyncio.gather(
                self.runner.drain(self.settings.drain_s),
                self.scheduler.drain(self.settings.drain_s),
            )
            if left:
                log.warning("interrupting %d replies still streaming after --drain-s", left)
            if jobs_left:
                log.warning("re-queueing %d jobs still running after --drain-s", jobs_left)
            await self.runner.close()
            await self.scheduler.close()
            # Every final status is committed now: end the feeds once the hub has pushed them.
            version = await self.store.read(lambda snapshot: snapshot.version)
            deadline = loop.time() + FEED_FLUSH_S
            while self.hub.version < version and loop.time() < deadline:
                await asyncio.sleep(0.01)
        finally:
            self.hub.close_streams()  # whatever happened, no feed client is left hanging
            self.reply_ends.close()  # nor an action waiting for a reply that will not run now
        log.info("drained replies in %.1f s", loop.time() - started)

    async def close(self) -> None:
        """Stop replies (saved as interrupted) and jobs (queued again), close streams, drain
        writes, close the file, and let another process lead."""
        if self._drain is not None:
            with contextlib.suppress(Exception):
                await self._drain
        await self.leader.stop_waiting()
        await self.scheduler.close()
        await self.runner.close()
        await self.search_index.close()
        await self.hub.close()
        self.reply_ends.close()
        await self.provider.aclose()
        await self.transcription_provider.aclose()
        await self.speech_provider.aclose()
        if self.memory.embedder is not None:
            await self.memory.embedder.aclose()
        self.store.close()
        self.leader.release()


def _is_watch_stream(outbox: Outbox) -> bool:
    return not isinstance(outbox, FeedChannel)
