"""The reply runner: notices pending replies in commits, runs them one at a time per thread.

It is a hub CommitObserver over `messages` and `tool_calls`: a commit that adds a pending reply
starts (or wakes) that thread's worker; a commit that stops a streaming reply (cancel, hand-off)
cancels it at once; a commit that approves or denies a tool call releases the reply waiting on
it. Because it reacts to commits rather than to the mutations' callers, a reply starts the same
way whether the message came over HTTP, from an action, or from another process.

Each reply has a job row (kind `reply`, created with it by `messages.send`): claiming the reply
marks the job running with one attempt more, and every way the reply ends finishes the job with
the same outcome (a trigger on `messages`). Only the leader process runs replies (`start`); at
start, replies a dead process left streaming are interrupted with their text and their job with
the reason, and pending ones, whose jobs are still pending, simply run: nothing is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from voicestack.agent.agents import Agents
from voicestack.agent.cost import Pricing, price_reply
from voicestack.agent.llm import ChatProvider
from voicestack.agent.records import emit_message, now
from voicestack.agent.reply import AgentSettings, Reply, SpeakerFactory
from voicestack.agent.reply_jobs import settle_reply_jobs
from voicestack.agent.reply_state import claim_next, fail_unfinished_tool_calls, tool_call_status
from voicestack.agent.reply_tools import CallFunction
from voicestack.agent.tool_loading import ToolSet
from voicestack.store.changes import ChangeSet
from voicestack.store.db import WriteDB
from voicestack.store.readers import Snapshot
from voicestack.store.store import Store

log = logging.getLogger(__name__)


@dataclass
class _Seen:
    messages: list[dict[str, Any]] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


def _rowids(changes: list[ChangeSet], table: str) -> set[int] | None:
    ids: set[int] = set()
    for changeset in changes:
        if table not in changeset.tables:
            continue
        rows = changeset.rows.get(table)
        if rows is None:
            return None  # too many rows to list: look at every unfinished one instead
        ids |= rows
    return ids


_MESSAGE_STATUS = "SELECT id, thread_id, role, status FROM messages"


def _placeholders(ids: set[int]) -> str:
    return ",".join("?" * len(ids))


def interrupt_leftovers(db: WriteDB, pricing: Pricing | None = None) -> list[str]:
    """Mark replies left `streaming` by a stopped process as interrupted, keeping their text;
    with `pricing`, fix their cost from the usage their finished steps wrote."""
    ids = [row["id"] for row in db.all("SELECT id FROM messages WHERE status = 'streaming'")]
    for message_id in ids:
        db.execute(
            "UPDATE messages SET status = 'interrupted', error_code = 'server_restarted',"
            " error_message = 'The server stopped during this reply.', updated_at = ?,"
            " text = CASE WHEN text = '' THEN coalesce((SELECT group_concat("
            " json_extract(data, '$.text'), '' ORDER BY id) FROM thread_events"
            " WHERE ref = messages.id AND kind = 'delta'), '') ELSE text END WHERE id = ?",
            (now(), message_id),
        )
        if pricing is not None:
            price_reply(db, message_id, pricing)
        emit_message(db, message_id)
        fail_unfinished_tool_calls(db, message_id, "Not finished: the server stopped.")
    return ids


class ReplyRunner:
    """Runs every pending reply, one at a time per thread, in order."""

    tables = frozenset({"messages", "tool_calls"})

    def __init__(
        self,
        store: Store,
        provider: ChatProvider,
        tools: ToolSet,
        agents: Agents,
        settings: AgentSettings,
        run_query: CallFunction,
        run_mutation: CallFunction,
        speakers: SpeakerFactory | None = None,
        pricing: Pricing | None = None,
    ) -> None:
        self._store = store
        self._pricing = pricing  # fixes each reply's cost when it ends
        self._provider = provider
        self._tools = tools
        self._agents = agents
        self._models = agents.models()
        self._settings = settings
        self._run_query = run_query
        self._run_mutation = run_mutation
        self._speakers = speakers
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._dirty: set[str] = set()
        self._replies: dict[str, tuple[Reply, asyncio.Task[None]]] = {}
        self._approvals: dict[str, asyncio.Future[bool]] = {}
        self._closing = False  # set by drain() or close(): no reply starts any more
        self._started = False  # set by start(), once this process leads

    @property
    def active(self) -> bool:
        """True once this process runs replies (the hub skips batches for an inactive source)."""
        return self._started and not self._closing

    @property
    def active_replies(self) -> int:
        """How many replies are streaming in this process."""
        return len(self._replies)

    async def start(self) -> None:
        """Interrupt replies a previous process left streaming; start the pending ones."""
        stopped = (await self._store.write(lambda db: interrupt_leftovers(db, self._pricing))).value
        if stopped:
            log.warning("marked %d replies interrupted by the last shutdown", len(stopped))
        if (await self._store.write(settle_reply_jobs)).value:
            log.warning("closed the jobs of replies that no longer exist")
        self._started = True
        threads = await self._store.read(
            lambda snap: [
                row["thread_id"]
                for row in snap.db().all(
                    "SELECT DISTINCT thread_id FROM messages"
                    " WHERE status = 'pending' AND role = 'assistant'"
                )
            ]
        )
        if threads:
            log.info("resuming the pending replies of %d threads", len(threads))
        for thread_id in threads:
            self.wake(thread_id)

    # -- the hub's CommitObserver protocol -----------------------------------------------------

    def collect(self, snapshot: Snapshot, changes: list[ChangeSet]) -> _Seen:
        """Read the message and tool-call rows the batch's commits changed."""
        conn = snapshot.conn
        seen = _Seen()
        if not self.active:
            return seen
        message_ids = _rowids(changes, "messages")
        if message_ids is None:
            sql = f"{_MESSAGE_STATUS} WHERE status IN ('pending', 'streaming')"
            params: list[int] = []
        else:
            sql = f"{_MESSAGE_STATUS} WHERE rowid IN ({_placeholders(message_ids)})"
            params = sorted(message_ids)
        if message_ids is None or message_ids:
            seen.messages = [
                {"id": i, "thread_id": t, "role": r, "status": s}
                for i, t, r, s in conn.execute(sql, params)
            ]
        call_ids = _rowids(changes, "tool_calls")
        if call_ids:
            seen.tool_calls = [
                {"id": i, "status": s}
                for i, s in conn.execute(
                    f"SELECT id, status FROM tool_calls WHERE rowid IN ({_placeholders(call_ids)})",
                    sorted(call_ids),
                )
            ]
        elif call_ids is None:
            seen.tool_calls = [
                {"id": i, "status": s}
                for i, s in conn.execute(
                    "SELECT id, status FROM tool_calls WHERE status IN ('pending', 'failed')"
                )
            ]
        return seen

    def deliver(self, seen: _Seen) -> None:
        """Start, wake or stop replies, and release approvals, as the commits say."""
        for row in seen.messages:
            if row["role"] != "assistant":
                continue
            if row["status"] == "pending":
                self.wake(row["thread_id"])
            elif row["status"] != "streaming" and row["id"] in self._replies:
                reply, task = self._replies[row["id"]]
                if not reply.finishing:
                    task.cancel()  # stopped by someone else: stop streaming at once
        for row in seen.tool_calls:
            waiter = self._approvals.get(row["id"])
            if waiter is not None and not waiter.done() and row["status"] != "awaiting_approval":
                waiter.set_result(row["status"] == "pending")

    # -- workers -------------------------------------------------------------------------------

    def wake(self, thread_id: str) -> None:
        """Make sure the thread's worker runs and looks for pending replies again."""
        if self._closing or not self._started:
            return
        self._dirty.add(thread_id)
        worker = self._workers.get(thread_id)
        if worker is None or worker.done():
            self._workers[thread_id] = asyncio.create_task(
                self._work(thread_id), name=f"voicestack-replies-{thread_id}"
            )

    async def _work(self, thread_id: str) -> None:
        try:
            while not self._closing:
                self._dirty.discard(thread_id)
                claim = (
                    await self._store.write(lambda db: claim_next(db, thread_id, self._models))
                ).value
                if claim is None:
                    if thread_id in self._dirty:
                        continue
                    return
                speaker = self._speakers(claim) if self._speakers else None
                reply = Reply(
                    claim,
                    store=self._store,
                    provider=self._provider,
                    tools=self._tools,
                    agents=self._agents,
                    settings=self._settings,
                    wait_for_approval=self.wait_for_approval,
                    run_query=self._run_query,
                    run_mutation=self._run_mutation,
                    speaker=speaker,
                    pricing=self._pricing,
                )
                task = asyncio.create_task(reply.run(), name=f"voicestack-reply-{claim.message_id}")
                self._replies[claim.message_id] = (reply, task)
                try:
                    await asyncio.wait([task])
                finally:
                    self._replies.pop(claim.message_id, None)
                    if speaker is not None:
                        speaker.discard()  # also when the reply was cancelled before it ran
        except Exception:
            log.exception("reply worker of thread %s failed", thread_id)
        finally:
            if self._workers.get(thread_id) is asyncio.current_task():
                del self._workers[thread_id]

    async def wait_for_approval(self, call_id: str) -> bool:
        """True once the tool call `call_id` is approved, False once denied (as the commits
        of this server say)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._approvals[call_id] = waiter
        try:
            # The decision may have committed before the waiter existed.
            status = (await self._store.write(lambda db: tool_call_status(db, call_id))).value
            if status != "awaiting_approval" and not waiter.done():
                waiter.set_result(status == "pending")
            return await waiter
        finally:
            self._approvals.pop(call_id, None)

    async def drain(self, timeout: float) -> int:
        """Start no more replies (pending ones stay pending for the next start) and wait up to
        `timeout` seconds for the streaming ones to end; returns how many still stream.

        `close()` then interrupts whatever is left. A worker ends once its current reply has,
        so waiting for the workers also covers a reply claimed just as the drain began.
        """
        self._closing = True
        workers = [worker for worker in self._workers.values() if not worker.done()]
        if workers and timeout > 0:
            await asyncio.wait(workers, timeout=timeout)
        return len(self._replies)

    async def close(self) -> None:
        """Stop every reply (each is saved as interrupted with its text) and every worker."""
        self._closing = True
        for _reply, task in list(self._replies.values()):
            task.cancel()
        workers = list(self._workers.values())
        for worker in workers:
            worker.cancel()
        for task in [*workers, *(t for _r, t in self._replies.values())]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
