"""Thread feeds an edge shares among its clients, whoever they are (DESIGN §12).

An edge opens one stream of a thread on a primary, however many of its clients watch the
thread and whatever their tokens: the thread's events are the same for every viewer. What
differs is who may see them, and for how long. So each client joins the shared stream as a
*member*: the primary checks its credentials and its access to the thread, and the access guard
watches the member from then on, exactly as it watches a stream of its own.

When the guard ends, holds or resumes a member (its token revoked, its membership removed, a
re-check under way), the primary says so inside the shared stream itself, as a
`voicestack-member` control event. The guard is delivered before anything else of a batch, so
the control precedes every event of the commit that caused it: the edge cuts the client off at
that commit, as a single server would.

The answer to a joining travels apart from the stream, so either may arrive first: each control
is numbered per member, and the answer carries the member's state with the number it had then
(`MemberState`); the edge keeps whichever is newer. An edge may join one client again (after a
resync, or a retry): each joining's id is the client's own id, a dot, and the joining's number,
so that the edge can tell the controls of the joining it waits on from an earlier one's. A new
joining replaces the client's earlier one here, and an earlier one that arrives after it (the
primary serves each in a task of its own) is refused.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from voicestack import jsoncodec
from voicestack.agent.feed import ThreadFeed
from voicestack.agent.membership import require_thread, thread_visible
from voicestack.functions.errors import FunctionError
from voicestack.reactive.access import AccessGuard, Viewer
from voicestack.reactive.channel import FeedChannel, Outbox
from voicestack.reactive.hub import Hub
from voicestack.reactive.streams import Stream
from voicestack.reactive.wire import encode_event
from voicestack.store.readers import Snapshot
from voicestack.store.store import Store

# The event name of a member control inside a shared stream (never sent on to a client).
MEMBER_EVENT = b"voicestack-member"
# Member ids that left a shared stream, remembered so that a joining still on its way (sent
# before the client left) is refused instead of lingering as a member nobody has.
_LEFT_KEPT = 4096
LIVE, HELD, ENDED = "live", "held", "ended"


def joining_of(member_id: str) -> tuple[str, int]:
    """The client a joining's id names, and the joining's number (0 when it has none)."""
    client, _, number = member_id.rpartition(".")
    if not client or not number.isdigit():
        return member_id, 0
    return client, int(number)


def _superseded() -> FunctionError:
    return FunctionError("joining_superseded", "A newer joining of this client came.", 409)


@dataclass(frozen=True, slots=True)
class MemberState:
    """A member's state after its `number`th control: live, held, or ended (with why)."""

    number: int
    state: str
    reason: str = ""

    def encode(self) -> str:
        """As the joining answer's header carries it: `NUMBER STATE [REASON]`."""
        return f"{self.number} {self.state} {self.reason}".rstrip()

    @classmethod
    def decode(cls, raw: str) -> MemberState | None:
        """A header's state; None when it is not one."""
        parts = raw.split()
        if len(parts) not in (2, 3) or not parts[0].isdigit():
            return None
        return cls(int(parts[0]), parts[1], parts[2] if len(parts) == 3 else "")


class FeedMember(Outbox):
    """One client of a shared feed, as the access guard sees it: sends nothing itself, but each
    end, hold and resume the guard gives it becomes a control event in the shared stream."""

    def __init__(self, shared: FeedChannel, member_id: str) -> None:
        super().__init__()
        self._shared = shared
        self.member_id = member_id
        self.told = 0  # controls sent so far

    @property
    def state(self) -> MemberState:
        """What the edge should make of this member now."""
        if self.closed:
            return MemberState(self.told, ENDED, self.ended_by or "")
        return MemberState(self.told, HELD if self.held else LIVE)

    def close(self, reason: str | None = None) -> None:
        """Ended by the guard (`reason` given): the edge ends the client at this point."""
        first = not self.closed
        super().close(reason)
        if first and reason is not None:
            self._tell({"end": reason})

    def hold(self) -> None:
        """The guard re-checks the member: the edge holds back what follows for the client."""
        if not self.closed and not self.held:
            super().hold()
            self._tell({"hold": True})

    def resume(self) -> None:
        """The re-check granted access: the edge sends the client what it held back."""
        if self.held and not self.closed:
            self.held = False
            self._tell({"resume": True})

    def leave(self) -> None:
        """The client left (or the shared stream ended): forgotten, with nothing said."""
        self.closed = True

    def _tell(self, what: dict[str, object]) -> None:
        self.told += 1
        note = jsoncodec.dumps({"member": self.member_id, "n": self.told, **what})
        self._shared.note(encode_event(MEMBER_EVENT, None, note))

    def _release_held(self) -> None:
        """Nothing is held here: the edge holds the client's events."""

    def _has_pending(self) -> bool:
        return False

    def _take(self) -> bytes:
        return b""


@dataclass(eq=False)
class _Shared:
    thread_id: str
    outbox: FeedChannel
    begins_after: int = 0  # the event its first event follows
    members: dict[str, FeedMember] = field(default_factory=dict)
    left: collections.OrderedDict[str, None] = field(default_factory=collections.OrderedDict)
    # Each client's newest joining number: an older joining that arrives late is refused.
    joinings: dict[str, int] = field(default_factory=dict)
    # The edge upstreams holding a stream every edge shares (voicestack/scale/thread_streams.py)
    # by their tags, which begin their clients' ids; None: a stream of one edge's own.
    upstreams: set[str] | None = None


class SharedFeeds:
    """The shared thread streams edges hold on this process, and their members."""

    def __init__(self, hub: Hub, guard: AccessGuard, store: Store, feed: ThreadFeed) -> None:
        self._hub = hub
        self._guard = guard
        self._store = store
        self._feed = feed
        self._shared: dict[str, _Shared] = {}

    @property
    def streams(self) -> int:
        """Shared thread streams open on this process, whichever edges hold them."""
        return len(self._shared)

    @property
    def members(self) -> int:
        """Clients joined to shared streams on this process, over every edge."""
        return sum(len(shared.members) for shared in self._shared.values())

    async def open(
        self, share: str, thread_id: str, opener: Viewer | None, cursor: int | None
    ) -> tuple[Stream, int, int]:
        """The thread's events after `cursor` (None: after the newest now), for an edge's
        clients; the event id they follow; and the thread's newest event id then (0: none), so
        that the edge knows nothing of the thread lies between the two. `opener` (the first
        client) must see the thread: an edge opens streams of threads its clients may see, but
        the stream is not theirs, and outlives their access. Raises `thread_not_found`
        otherwise."""
        user = opener.caller if opener is not None else None
        outbox = FeedChannel()
        self._hub.track(outbox)
        shared = _Shared(thread_id, outbox)

        def release() -> None:
            self._feed.leave(thread_id, outbox)
            self._hub.close_channel(outbox)
            if self._shared.get(share) is shared:
                del self._shared[share]
            for member in shared.members.values():
                member.leave()
            shared.members.clear()

        def start(snapshot: Snapshot) -> tuple[int, int]:
            require_thread(snapshot.db(), thread_id, user)
            conn = snapshot.conn
            thread_newest: int = conn.execute(
                "SELECT coalesce(max(id), 0) FROM thread_events WHERE thread_id = ?",
                (thread_id,),
            ).get
            if cursor is not None:
                return cursor, thread_newest
            newest: int = conn.execute("SELECT coalesce(max(id), 0) FROM thread_events").get
            return newest, thread_newest

        try:
            after, thread_newest = await self._store.read(start)
            shared.begins_after = after
            await self._hub.join_feed(self._feed, thread_id, outbox, after)
        except BaseException:
            release()
            raise
        old = self._shared.pop(share, None)
        if old is not None:
            old.outbox.close()
        self._shared[share] = shared
        return Stream(outbox, release), after, thread_newest

    def live_point(self, share: str) -> int | None:
        """The newest event the shared stream `share` has queued for its edges (every event
        after it is still to come); None when no such stream is open here."""
        shared = self._shared.get(share)
        if shared is None or shared.outbox.closed:
            return None
        return max(shared.begins_after, shared.outbox.cursor)

    async def thread_newest(self, thread_id: str, at: int) -> int:
        """The id of the thread's newest event at or before event `at` (0: none)."""

        def read(snapshot: Snapshot) -> int:
            newest: int = snapshot.conn.execute(
                "SELECT coalesce(max(id), 0) FROM thread_events WHERE thread_id = ? AND id <= ?",
                (thread_id, at),
            ).get
            return newest

        result: int = await self._store.read(read)
        return result

    async def join(
        self,
        share: str,
        member_id: str,
        viewer: Viewer | None,
        cursor: int | None,
        catch_up: bool,
    ) -> tuple[bytes, int, MemberState]:
        """Make a client a member of the shared stream `share`, watched by the access guard
        from now on; with `catch_up`, what it is missing after `cursor` (None: a snapshot) and
        the event id it continues after, else nothing and `cursor`; and the member's state
        then. Raises `thread_not_found` when the client may not see the thread, `feed_not_open`
        (503) when this process holds no such stream, or the client's upstream no longer holds
        it, or it was forgotten meanwhile (the edge tries again once it has reopened it),
        `member_left` (410) for a member that has already left, and `joining_superseded` (409)
        for a joining a newer one of the same client replaced."""
        shared = self._shared.get(share)
        if shared is None or shared.outbox.closed:
            raise FunctionError(
                "feed_not_open", "The thread's stream is moving between servers: try again.", 503
            )
        client, number = joining_of(member_id)
        if shared.upstreams is not None and client.partition("-")[0] not in shared.upstreams:
            raise FunctionError(
                "feed_not_open", "This edge no longer holds the thread's stream here.", 503
            )
        if client in shared.left:
            raise FunctionError("member_left", "This client has left the stream.", 410)
        if number < shared.joinings.get(client, 0):
            raise _superseded()
        shared.joinings[client] = number
        thread_id = shared.thread_id
        user = viewer.caller if viewer is not None else None
        member = FeedMember(shared.outbox, member_id)
        old = shared.members.pop(client, None)
        if old is not None:
            old.leave()
        shared.members[client] = member
        # Guarded before the check reads, as a stream of its own is.
        self._guard.watch(member, viewer, lambda db: thread_visible(db, thread_id, user), thread_id)

        def read(snapshot: Snapshot) -> tuple[int, bytes, int]:
            require_thread(snapshot.db(), thread_id, user)
            if catch_up:
                events, after = self._feed.catch_up(snapshot, thread_id, cursor)
                return snapshot.version, events, after
            return snapshot.version, b"", cursor or 0

        try:
            version, events, after = await self._store.read(read)
        except BaseException:
            if shared.members.get(client) is member:
                del shared.members[client]
            member.leave()
            raise
        current = shared.members.get(client)
        if current is not member:  # replaced by a newer joining, or forgotten, meanwhile
            if current is not None:
                raise _superseded()
            raise FunctionError(
                "feed_not_open", "The thread's stream is moving between servers: try again.", 503
            )
        self._guard.checked(member, version)
        return events, after, member.state

    def admit_upstream(self, share: str, tag: str) -> None:
        """An edge's upstream tagged `tag` holds the shared stream `share`, which every edge
        may share: its clients (their ids are the tag, a dash, and their own) may join."""
        shared = self._shared.get(share)
        if shared is not None:
            if shared.upstreams is None:
                shared.upstreams = set()
            shared.upstreams.add(tag)

    def leave_upstream(self, share: str, tag: str, stream_id: str) -> None:
        """The upstream tagged `tag` no longer holds the shared stream `share`: it let go of
        its hold `stream_id`, or its edge stopped renewing it. Its clients are forgotten, a
        joining of theirs still on its way is refused, and the stream says so in its place, so
        that the upstream, if it still follows the stream by that hold, holds those clients
        from there on and joins them again."""
        shared = self._shared.get(share)
        if shared is None or shared.upstreams is None:
            return
        shared.upstreams.discard(tag)
        prefix = f"{tag}-"
        for client in [c for c in shared.members if c.startswith(prefix)]:
            shared.members.pop(client).leave()
            shared.joinings.pop(client, None)
        note = jsoncodec.dumps({"upstream": tag, "stream": stream_id, "left": True})
        shared.outbox.note(encode_event(MEMBER_EVENT, None, note))

    def leave(self, share: str, client: str) -> None:
        """A client left the shared stream `share` (its id, without a joining number): the
        guard forgets it, and a joining of it still on its way is refused."""
        shared = self._shared.get(share)
        if shared is None:
            return
        member = shared.members.pop(client, None)
        if member is not None:
            member.leave()
        shared.joinings.pop(client, None)
        shared.left[client] = None
        if len(shared.left) > _LEFT_KEPT:
            shared.left.popitem(last=False)
