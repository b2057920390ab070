"""An edge's upstream of a thread: the thread's feed, shared by every client of the thread on
this edge whatever its credentials (voicestack/agent/shared_feeds.py).

The primary publishes a thread's stream once for every edge that follows the thread
(voicestack/scale/thread_streams.py); the upstream takes it through a ThreadFollower.

Each client joins it as a member on the primary holding it, which checks the client's access,
catches it up when the edge cannot, and tells the edge in the stream itself, at the commit, when
the client loses access. A resync reopens the thread after the last event this edge saw, and
joins every client again on the primary that now holds it.
"""

from __future__ import annotations

import asyncio
import collections
import json
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlencode

from voicestack.agent.feed import Event, send_plain
from voicestack.agent.shared_feeds import ENDED, HELD, LIVE, MEMBER_EVENT, MemberState
from voicestack.http.body import parse_int64
from voicestack.http.state import (
    CATCH_UP_HEADER,
    CURSOR_HEADER,
    MEMBER_HEADER,
    MEMBER_STATE_HEADER,
    SHARE_HEADER,
    THREAD_NEWEST_HEADER,
)
from voicestack.reactive.access import ACCESS_REMOVED, TOKEN_REVOKED
from voicestack.reactive.channel import FeedChannel, Outbox
from voicestack.scale.envelope import RequestEnvelope, ResponseEnvelope
from voicestack.scale.feed_member import FeedMember
from voicestack.scale.journal import whole_run
from voicestack.scale.link import OPEN_TIMEOUT_S, EdgeLink, PrimaryUnavailable
from voicestack.scale.stream_wire import FOLLOW_HEADER
from voicestack.scale.thread_follower import ThreadFollower
from voicestack.scale.upstream import FINAL_REFUSALS, Upstream, sse_events

# Joinings a new client may need: its primary may stop, or the stream move, meanwhile.
_JOIN_ATTEMPTS = 3
RING_EVENTS = 1024  # recent feed events kept for clients that join while the upstream runs
# The thread journal may not hold the newest event yet just after the upstream opened: one
# more read, a moment later.
_JOURNAL_READS = 2
_JOURNAL_AGAIN_S = 0.25
_MEMBER_CONTROL = b"event: " + MEMBER_EVENT + b"\n"


class FeedUpstream(Upstream):
    """A thread's feed, shared by every client of the thread on this edge."""

    def __init__(
        self, link: EdgeLink, request: RequestEnvelope, forget: Callable[[Upstream], None]
    ) -> None:
        super().__init__(link, request, forget)
        self.thread_id = request.path.removeprefix("/api/threads/").removesuffix("/events")
        # The name this edge proposes for a stream of its own; and the one its members join by
        # (the primary's, for a stream every edge shares).
        # It tags this upstream too: its members' ids begin with it (the primary forgets them
        # when the upstream lets go).
        self.share = uuid.uuid4().hex
        self.stream_share = self.share
        self._follower = ThreadFollower(link, self, self.thread_id, lambda: self.stream_id)
        self.last = 0  # the newest event id this edge has from the primary
        # Clients whose catch-up ends before this would miss events: the upstream began after
        # it, or its recent events no longer reach back that far.
        self.floor = 0
        # The thread's newest event where the upstream began (None: the primary did not say):
        # where the thread journal's run must end to reach back before `floor`.
        self._began_at: int | None = None
        self._journal_reads = 0
        self._reaching: asyncio.Future[None] | None = None
        self._recent: collections.deque[Event] = collections.deque(maxlen=RING_EVENTS)
        self._clients: set[FeedChannel] = set()  # joined clients' outboxes
        self.members: dict[str, FeedMember] = {}  # joined, or joining

    def _live(self) -> Iterator[FeedMember]:
        return (m for m in self.members.values() if not m.ended)

    def opening(self) -> RequestEnvelope:
        """The thread's shared stream after the last event this edge has (at first: after the
        newest), opened with a current member's credentials."""
        base = next((m.opening for m in self._live()), self.request)
        query = f"since={self.last}".encode() if self.opened else b""
        headers = [*base.headers, (SHARE_HEADER.encode(), self.share.encode())]
        if self._follower.following:
            headers.append((FOLLOW_HEADER.encode(), b"1"))
        return RequestEnvelope(
            base.method, base.path, query, headers, b"", base.client, scheme=base.scheme
        )

    def chosen_primary(self) -> str | None:
        """The thread's home among the primaries serving: every edge opens it there
        (voicestack/scale/primaries.py)."""
        return self.link.primaries.home(self.thread_id)

    async def open(self) -> ResponseEnvelope:
        """Open (or reopen) the thread's stream; the first opening says where it begins."""
        first = not self.opened
        await self._follower.follow()
        self._follower.expect()
        try:
            head = await super().open()
        except BaseException:
            self._follower.answered(None)
            if first:
                self._follower.close()  # the upstream is dropped unopened
            raise
        if head.status != 200:
            self._follower.answered(None)
            if first:
                self._follower.close()
            return head
        share = head.header(SHARE_HEADER.encode())
        self.stream_share = share.decode("latin-1") if share else self.share
        if first:
            self.floor = int(head.header(CURSOR_HEADER.encode()) or b"0")
            # Events may have arrived before the answer did.
            self.last = max(self.last, self.floor)
            newest = (head.header(THREAD_NEWEST_HEADER.encode()) or b"").decode("latin-1")
            if newest.isdigit() and not self._recent:
                # Nothing of the thread lies between its newest event and the stream's start:
                # a client at that event, or after it, misses nothing here either.
                self._began_at = self.floor = min(self.floor, int(newest))
        if head.body:  # its catch-up, before the stream it follows from now on
            self.receive(head.body)
        self._follower.answered(head)
        return head

    def close(self) -> None:
        """End every client, let go of the stream, and stop following the thread."""
        super().close()
        self._follower.close()

    def clients(self) -> list[Outbox]:
        """The edge clients this upstream feeds, joined or joining."""
        return [outbox for member in self.members.values() for outbox in member.outboxes]

    @property
    def client_count(self) -> int:
        """How many clients this upstream feeds, joined or joining."""
        return sum(len(member.outboxes) for member in self.members.values())

    def add(
        self, opening: RequestEnvelope, credential: str | None
    ) -> tuple[FeedMember, FeedChannel]:
        """A new member, and its client's outbox, for a client with the credentials of
        `opening`, to join on the primary (`enroll`); `credential`: the bearer credential later
        clients may share the member by."""
        outbox = FeedChannel()
        member_id = f"{self.share}-{uuid.uuid4().hex[:16]}"
        member = FeedMember(member_id, opening, credential, {outbox})
        self.members[member.id] = member
        return member, outbox

    def attach(
        self, credential: str, cursor: str | int | None
    ) -> tuple[FeedMember, FeedChannel] | None:
        """A resuming client of `credential` joined beside its other clients, when a member of
        theirs is in and this upstream's recent events hold everything after the client's
        cursor: nothing is asked of the primary. Its member and outbox; None otherwise."""
        after = self.covers(cursor)
        if after is None:
            return None
        member = next((m for m in self._live() if m.credential == credential and m.joined), None)
        if member is None:
            return None
        outbox = FeedChannel()
        member.outboxes.add(outbox)
        if member.guard_held or member.resync_held:
            outbox.hold()
        self.join(member, outbox, b"", after)
        return member, outbox

    def _joining(
        self, member: FeedMember, cursor: str | int | None, catch_up: bool
    ) -> tuple[RequestEnvelope, int]:
        """A new joining of `member`: its request, and its number."""
        base = member.opening
        query = b"" if cursor is None else urlencode({"since": str(cursor)}).encode()
        headers = [
            *base.headers,
            (CATCH_UP_HEADER.encode(), b"1" if catch_up else b"0"),
            (SHARE_HEADER.encode(), self.stream_share.encode()),
            (MEMBER_HEADER.encode(), member.next_joining().encode()),
        ]
        request = RequestEnvelope(
            base.method, base.path, query, headers, b"", base.client, scheme=base.scheme
        )
        return request, member.joining

    def covers(self, cursor: str | int | None) -> int | None:
        """`cursor` as an event id when this upstream's recent events hold everything after it
        (a client resuming there needs no catch-up read); None otherwise."""
        try:
            after = parse_int64(str(cursor)) if cursor is not None else None
        except (ValueError, OverflowError):
            return None  # the primary answers it, as it answers a bad cursor
        if after is None or not self.floor <= after <= self.last:
            # Also a cursor past every event this edge has seen (a client of a database
            # restored from an older backup, say): the primary knows where it resumes.
            return None
        return after

    async def enroll(
        self, member: FeedMember, cursor: str | int | None
    ) -> tuple[ResponseEnvelope, int, bool]:
        """Join a new member on the primary holding the stream: (the primary's answer, the
        event id its client continues after, whether that client's catch-up comes from this
        edge's recent events rather than the primary). Raises PrimaryUnavailable."""
        for _ in range(_JOIN_ATTEMPTS):
            if not await self.settled(OPEN_TIMEOUT_S):
                raise PrimaryUnavailable("the thread's stream is not open")
            here = self.covers(cursor)
            if here is None and await self.reach_back(cursor):
                here = self.covers(cursor)
            request, joining = self._joining(member, cursor, catch_up=here is None)
            stream = self.stream_id
            # One joining of a member in flight at a time: a resync meanwhile leaves this one
            # to its enrolling, which joins it again on the stream as it is then (below).
            member.enrolling = True
            try:
                answer = await self.link.call(request, self.primary)
            finally:
                member.enrolling = False
            if self.closed:
                break
            if answer.status == 503 and self.stream_id == stream:
                # That primary no longer holds the stream (it is stopping, say): reopen it.
                self.primary_lost()
            elif self.stream_id == stream:
                break
            # The stream moved while the member was joining: join it where it is now.
        else:
            raise PrimaryUnavailable("the thread's stream kept moving while the client joined")
        self._answered(member, answer, joining)
        if answer.status == 200 and member.joining == joining and member.resync_held:
            member.resync_held = False  # joined on the stream as it is now
            member.apply_holds()
        if here is not None:
            return answer, here, True
        return answer, int(answer.header(CURSOR_HEADER.encode()) or b"0"), False

    async def reach_back(self, cursor: str | int | None) -> bool:
        """Reach back before `floor` with the thread journal (voicestack/scale/journal.py), so
        that a client resuming at `cursor` is caught up here rather than by the primary: True
        if the recent events now reach back further. One read at a time, and few per
        upstream."""
        try:
            after = parse_int64(str(cursor)) if cursor is not None else None
        except (ValueError, OverflowError):
            return False
        if after is None or after >= self.floor:
            return False
        while self._reaching is not None:
            await asyncio.shield(self._reaching)
            if after >= self.floor:
                return True
        if self._journal_reads >= _JOURNAL_READS or not self._reaches_back():
            return False
        self._reaching = asyncio.get_running_loop().create_future()
        try:
            for attempt in range(_JOURNAL_READS - self._journal_reads):
                if attempt:
                    await asyncio.sleep(_JOURNAL_AGAIN_S)
                self._journal_reads += 1
                read = await self._read_journal()
                if read is not None:
                    return read
            return False
        finally:
            self._reaching.set_result(None)
            self._reaching = None

    def _reaches_back(self) -> bool:
        """Whether a run of the journal ending where the upstream began could add anything:
        not when the recent events no longer reach back that far (a run ending there would
        leave a hole after it), nor when the thread had no event then."""
        return bool(self._began_at) and self.floor == self._began_at

    async def _read_journal(self) -> bool | None:
        """One read: True if it reached back, False if it cannot, None if the newest event
        the run must end at is not journalled (yet)."""
        events = await self.link.read_journal(self.thread_id)
        began_at = self._began_at
        if events is None or began_at is None or not self._reaches_back():
            return False
        found = whole_run(events, began_at)
        if found is None:
            return None
        before, run = found
        if before >= self.floor:
            return False
        self._journal_reads = _JOURNAL_READS  # the journal has nothing older to add
        joined = [(event.id, event.event) for event in run] + list(self._recent)
        dropped = joined[: max(0, len(joined) - RING_EVENTS)]
        self._recent = collections.deque(joined[len(dropped) :], maxlen=RING_EVENTS)
        self.floor = dropped[-1][0] if dropped else before
        self.link.journal_events += len(run) - len(dropped)
        return True

    def join(self, member: FeedMember, outbox: FeedChannel, catch_up: bytes, after: int) -> bool:
        """Send a client of `member` its catch-up, then every event after `after`; False
        (nothing done) when events between `after` and what this upstream still has would be
        missing: catch the client up further first."""
        if after < self.floor:
            return False
        self._clients.add(outbox)
        outbox.preload(catch_up, after)
        for event_id, event in self._recent:
            outbox.append(event_id, event)  # those at or before its cursor are skipped
        return True

    def leave(self, member: FeedMember, outbox: FeedChannel) -> None:
        """A client of `member` left; a member's last client ends it, and the upstream's last
        client closes the upstream."""
        self._clients.discard(outbox)
        member.outboxes.discard(outbox)
        if member.outboxes or self.members.pop(member.id, None) is None:
            return
        if not self.members:
            self.close()
        elif not self.closed:
            task = self.link.leave_shared(self.primary, self.stream_share, member.id)
            asyncio.get_running_loop().create_task(task)

    def primary_lost(self) -> None:
        """Hold every client's events until its member is joined again on the new primary,
        which judges its access anew; then reopen."""
        if not self.closed and self.opened:
            for member in self.members.values():
                member.resync_held = True
                member.apply_holds()
        super().primary_lost()

    async def resynced(self) -> bool:
        """Join every member on the new primary (no catch-up: the stream resumed after this
        edge's last event), each held until its answer; one refused now is ended. That includes
        members joined in an earlier attempt of this resync, whose stream was let go since, but
        not a client still enrolling: its enrolling joins it again where the stream is now."""
        live = [member for member in self._live() if not member.enrolling]
        for member in live:
            member.resync_held = True
            member.apply_holds()
        settled = await asyncio.gather(*(self._rejoin(member) for member in live))
        return all(settled)

    async def _rejoin(self, member: FeedMember) -> bool:
        request, joining = self._joining(member, None, False)
        try:
            answer = await self.link.call(request, self.primary)
        except PrimaryUnavailable:
            return False
        if member.joining != joining:
            return True  # superseded: the newer joining's answer decides
        if answer.status in FINAL_REFUSALS:
            member.end(TOKEN_REVOKED if answer.status == 401 else ACCESS_REMOVED)
        elif answer.status != 200:
            return False
        self._answered(member, answer, joining)
        member.resync_held = False
        member.apply_holds()
        return True

    def _answered(self, member: FeedMember, answer: ResponseEnvelope, joining: int) -> None:
        """The answer to the member's `joining`th joining: the member's state as the guard saw
        it then (nothing, if the member has joined again since)."""
        if answer.status != 200 or member.joining != joining:
            return
        member.joined = True
        raw = answer.header(MEMBER_STATE_HEADER.encode()) or b""
        state = MemberState.decode(raw.decode("latin-1"))
        if state is not None:
            member.judged(state)
        if member.id not in self.members:
            # Its clients left while it was joining, and the primary may have heard of it
            # before the joining: say so again.
            task = self.link.leave_shared(self.primary, self.stream_share, member.id)
            asyncio.get_running_loop().create_task(task)

    def refused(self, head: ResponseEnvelope) -> bool:
        """The member whose credentials reopened the stream may not see it: end it, and try
        with another one's."""
        opener = next(self._live(), None)
        if opener is None:
            return False
        opener.end(TOKEN_REVOKED if head.status == 401 else ACCESS_REMOVED)
        return next(self._live(), None) is not None

    def receive(self, chunk: bytes) -> None:
        """Pass on the events after the last one this edge has, one chunk written straight to
        every idle client as a single server does; apply each member control in its place."""
        fresh: list[Event] = []
        for event_id, data, event in sse_events(chunk):
            if event_id is None:
                if event.startswith(_MEMBER_CONTROL):
                    self._send(fresh)
                    fresh = []
                    if not self._control(data):
                        return  # nothing after it: the stream is reopened
                continue
            if event_id <= self.last:
                continue
            self.last = event_id
            if len(self._recent) == self._recent.maxlen:
                self.floor = self._recent[0][0]
            self._recent.append((event_id, event))
            fresh.append((event_id, event))
        self._send(fresh)

    def _send(self, fresh: list[Event]) -> None:
        if fresh and self._clients:
            send_plain(self._clients, fresh, asyncio.get_running_loop().time())

    def _control(self, data: bytes) -> bool:
        """Apply what the primary's access guard said of one member, at this point of the
        stream. Or the primary forgot this upstream's members, its hold of this stream having
        lapsed: nothing from this point on is taken (the guard no longer watches them), they
        are held, and the stream is reopened and they are joined again. False then."""
        try:
            note = json.loads(data)
            if "upstream" in note:
                lapsed = note["upstream"] == self.share and note.get("stream") == self.stream_id
                if lapsed and self.stream_id is not None:
                    self._follower.drop()
                    self.link.forget_stream(self.stream_id)
                    self.primary_lost()
                    return False
                return True  # another upstream's, or a hold this one has let go of
            client, _, joining = str(note["member"]).rpartition(".")
            number = int(note["n"])
            member = self.members.get(client)
        except (ValueError, KeyError, TypeError):
            return True
        if member is None or joining != str(member.joining):
            return True  # an earlier joining's, or a client that left
        if "end" in note:  # its clients' connections end, and leave
            member.judged(MemberState(number, ENDED, str(note["end"])))
        elif "hold" in note or "resume" in note:
            member.judged(MemberState(number, HELD if "hold" in note else LIVE))
        return True
