"""An edge's upstreams: one stream on a primary per distinct subscription, shared by every
client of this edge that watches it.

A watch upstream keeps the newest event of each subscription, so that a client joining late
gets the current values at once, and a resync (after the primary or NATS came back) sends
clients only what changed meanwhile. A feed upstream is the thread's own stream, shared by every
client of the thread on this edge whatever its credentials (voicestack/agent/shared_feeds.py):
each client joins it as a member on the primary holding it, which checks the client's access,
catches it up when the edge cannot, and tells the edge in the stream itself, at the commit, when
the client loses access. A resync reopens the thread after the last event this edge saw, and
joins every client again on the primary that now holds it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlencode

from voicestack import jsoncodec
from voicestack.agent.feed import Event, send_plain
from voicestack.agent.shared_feeds import ENDED, HELD, LIVE, MEMBER_EVENT, MemberState
from voicestack.http.body import parse_int64
from voicestack.http.state import (
    CATCH_UP_HEADER,
    CURSOR_HEADER,
    MEMBER_HEADER,
    MEMBER_STATE_HEADER,
    SHARE_HEADER,
)
from voicestack.reactive.access import ACCESS_REMOVED, TOKEN_REVOKED
from voicestack.reactive.channel import FeedChannel, Outbox
from voicestack.reactive.wire import http_chunk
from voicestack.scale.envelope import RequestEnvelope, ResponseEnvelope
from voicestack.scale.link import OPEN_TIMEOUT_S, EdgeLink, PrimaryUnavailable
from voicestack.scale.primary import END_STOPPING

log = logging.getLogger(__name__)

RESYNC_WAIT_S = 0.5
RESYNC_MAX_WAIT_S = 5.0
# Answers to a reopening that end the stream: the viewer may no longer see it.
FINAL_REFUSALS = frozenset({400, 401, 403, 404, 410, 422})
# Joinings a new client may need: its primary may stop, or the stream move, meanwhile.
_JOIN_ATTEMPTS = 3
RING_EVENTS = 1024  # recent feed events kept for clients that join while the upstream runs
_MEMBER_CONTROL = b"event: " + MEMBER_EVENT + b"\n"


def sse_events(chunk: bytes) -> Iterator[tuple[int | None, bytes, bytes]]:
    """Each event in a chunk of SSE bytes: (its id, its data line's JSON, the event's bytes);
    comments (keep-alives) are skipped."""
    for block in chunk.split(b"\n\n"):
        if not block or block.startswith(b":"):
            continue
        event_id: int | None = None
        data = b""
        for line in block.split(b"\n"):
            if line.startswith(b"id:"):
                with contextlib.suppress(ValueError):
                    event_id = int(line[3:].strip())
            elif line.startswith(b"data:"):
                data = line[5:].strip()
        yield event_id, data, block + b"\n\n"


class RelayChannel(Outbox):
    """An edge client's outbox of a watch stream: the newest event per subscription, as the
    primary encoded it (a slow client skips to the latest value, as on a single server)."""

    def __init__(self) -> None:
        super().__init__()
        self._pending: dict[str | None, bytes] = {}
        self._held: dict[str | None, bytes] = {}

    def push(self, sub_id: str | None, event: bytes) -> None:
        """Make `event` the next thing sent for `sub_id`, replacing an unsent older one."""
        if self.closed:
            return
        if self.held:
            self._held[sub_id] = event
            return
        self._pending[sub_id] = event
        self._wake()

    def _release_held(self) -> None:
        self._pending.update(self._held)
        self._held = {}

    def has_pending(self) -> bool:
        """Whether values wait to be sent by the writer."""
        return bool(self._pending)

    def _has_pending(self) -> bool:
        return bool(self._pending)

    def _take(self) -> bytes:
        pending, self._pending = self._pending, {}
        return b"".join(pending.values())


class Upstream:
    """One stream on a primary and the edge clients it feeds."""

    def __init__(
        self, link: EdgeLink, request: RequestEnvelope, forget: Callable[[Upstream], None]
    ) -> None:
        self.link = link
        self.request = request
        self.primary: str | None = None
        self.stream_id: str | None = None
        self.head = ResponseEnvelope(200)
        self._forget = forget
        self._resync: asyncio.Task[None] | None = None
        self._lost_again = False  # lost once more while resyncing: open it anew
        self.closed = False
        self.opened = False  # a primary has answered an opening with a stream

    def opening(self) -> RequestEnvelope:
        """The request that (re)opens this stream on a primary."""
        return self.request

    def clients(self) -> list[Outbox]:
        """The edge clients this upstream feeds."""
        raise NotImplementedError

    async def open(self) -> ResponseEnvelope:
        """Open (or reopen) the stream on a primary; its answer (200: streaming)."""
        stream_id, head = await self.link.open(self.opening(), self)
        if head.status == 200:
            self.stream_id, self.primary, self.head = stream_id, head.primary, head
            self.opened = True
        return head

    def ended(self, reason: str) -> None:
        """The primary ended the stream: resume elsewhere if it is stopping, else end."""
        self.stream_id = None
        if reason == END_STOPPING:
            self.primary_lost()
        else:
            self.close()

    def primary_lost(self) -> None:
        """Reopen the stream once a primary answers; clients stay connected meanwhile."""
        if self.closed or not self.opened:
            return  # an opening still unanswered is judged by its answer
        if self._resync is not None:
            self._lost_again = True
            return
        self._let_go()
        self._resync = asyncio.get_running_loop().create_task(self._reopen())

    def _let_go(self) -> None:
        if self.stream_id is not None:
            old, primary = self.stream_id, self.primary
            self.link.forget_stream(old)
            # If that primary still holds it, it lets go now rather than at its lease's end.
            asyncio.get_running_loop().create_task(self.link.close_stream(old, primary))
        self.stream_id = None
        self.primary = None

    async def _reopen(self) -> None:
        wait = RESYNC_WAIT_S
        try:
            while not self.closed:
                self._lost_again = False
                try:
                    head = await self.open()
                except PrimaryUnavailable:
                    head = None
                if head is not None and head.status == 200:
                    if await self.resynced() and not self._lost_again:
                        return
                    if self.closed:
                        return
                    self._let_go()  # its primary went away meanwhile: open it anew
                elif head is not None and head.status in FINAL_REFUSALS:
                    # Refused now: the token was revoked or access removed while away.
                    if self.refused(head):
                        continue
                    log.info("a stream could not be resumed (%d); ending it", head.status)
                    self.close()
                    return
                # No primary yet, or a passing refusal (a draining primary, the old stream
                # still counted against the token's limit): try again.
                await asyncio.sleep(wait)
                wait = min(wait * 2, RESYNC_MAX_WAIT_S)
        finally:
            self._resync = None

    async def resynced(self) -> bool:
        """The stream reopened after a resync: False when it must be opened anew (its clients
        could not all be settled with its new primary)."""
        return True

    def refused(self, head: ResponseEnvelope) -> bool:
        """A reopening was refused for good: True to try again at once (with other
        credentials), False to end the upstream."""
        return False

    async def settled(self, timeout: float) -> bool:
        """Wait (at most `timeout`) for a resync under way: whether the stream is open now."""
        task = self._resync
        if task is not None:
            await asyncio.wait({task}, timeout=timeout)
        return not self.closed and self.primary is not None

    def close(self) -> None:
        """End every client and let go of the stream."""
        if self.closed:
            return
        self.closed = True
        for outbox in self.clients():
            outbox.close()
        if self._resync is not None:
            self._resync.cancel()
        self._forget(self)
        if self.stream_id is not None:
            stream_id, primary = self.stream_id, self.primary
            self.stream_id = None
            asyncio.get_running_loop().create_task(self.link.close_stream(stream_id, primary))

    def receive(self, chunk: bytes) -> None:
        """A chunk of the stream's SSE bytes, for the clients."""
        raise NotImplementedError

    def frame(self, kind: str, payload: bytes) -> None:
        """Event streams get no WebSocket frames."""


class WatchUpstream(Upstream):
    """A query watch stream (one query, or several by id) shared by this edge's clients."""

    def __init__(
        self,
        link: EdgeLink,
        request: RequestEnvelope,
        forget: Callable[[Upstream], None],
        multi: bool,
    ) -> None:
        super().__init__(link, request, forget)
        self.multi = multi
        # The newest event per subscription: (version, what it says as JSON, its bytes).
        self.latest: dict[str | None, tuple[int, bytes, bytes]] = {}
        self._clients: set[RelayChannel] = set()

    def clients(self) -> list[Outbox]:
        """The edge clients this upstream feeds."""
        return list(self._clients)

    def join(self, outbox: RelayChannel, last_version: int | None) -> None:
        """Feed `outbox` from now on, starting with every value newer than `last_version`."""
        self._clients.add(outbox)
        for sub_id, (version, _, event) in self.latest.items():
            if last_version is None or version > last_version:
                outbox.push(sub_id, event)

    def leave(self, outbox: RelayChannel) -> None:
        """Stop feeding `outbox`; the last client to leave closes the upstream."""
        self._clients.discard(outbox)
        if not self._clients:
            self.close()

    def receive(self, chunk: bytes) -> None:
        """Keep and pass on each event that says something new."""
        for version, data, event in sse_events(chunk):
            if version is None:
                continue
            try:
                body = json.loads(data)
            except ValueError:
                continue
            if not isinstance(body, dict):
                continue
            sub_id = str(body["id"]) if self.multi and "id" in body else None
            said = jsoncodec.dumps(body.get("value", body.get("error")))
            known = self.latest.get(sub_id)
            if known is not None and (known[0] >= version or known[1] == said):
                # Older, or the same value again (a resync's snapshot): nothing new.
                self.latest[sub_id] = (max(known[0], version), known[1], known[2])
                continue
            self.latest[sub_id] = (version, said, event)
            frame = http_chunk(event)
            now = asyncio.get_running_loop().time()
            for outbox in list(self._clients):
                # Straight to an idle client, as a single server does; else its newest value.
                if outbox.has_pending() or not outbox.write_direct(frame, now):
                    outbox.push(sub_id, event)


@dataclass(eq=False)
class FeedMember:
    """A membership of a shared thread stream on its primary, with the request that joins it
    there (its credentials), and the edge clients it covers. Clients of one bearer token share
    one: the membership is the proof of their access, and the primary ends it at the commit
    that revokes the token or removes its user. A sign-in cookie expires, and is renewed by
    use, on the primary, so each of its clients joins there on its own."""

    id: str
    opening: RequestEnvelope
    credential: str | None  # the bearer credential later clients may share it by; None: none
    outboxes: set[FeedChannel] = field(default_factory=set)
    joined: bool = False  # the primary has accepted it
    ended: bool = False  # its access ended
    guard_held: bool = False  # the primary's access guard is re-checking it
    resync_held: bool = False  # not yet joined again on the stream's new primary
    # Its joinings so far: the current one's controls name it `id.joining`; an earlier one's
    # (on a primary it has left, or before a retry) are ignored.
    joining: int = 0
    enrolling: bool = False  # its first joining is in flight
    # The number of the newest guard state heard of this joining (a control, or the answer).
    guard_seen: int = -1

    def next_joining(self) -> str:
        """Begin a new joining (what earlier ones heard is void): its id."""
        self.joining += 1
        self.guard_seen = -1
        self.guard_held = False
        return f"{self.id}.{self.joining}"

    def judged(self, state: MemberState) -> None:
        """What the primary's access guard said of this member, unless something newer was
        heard already (a control in the stream and the joining's answer race each other)."""
        if state.number <= self.guard_seen:
            return
        self.guard_seen = state.number
        if state.state == ENDED:
            self.end(state.reason or ACCESS_REMOVED)
        else:
            self.guard_held = state.state == HELD
            self.apply_holds()

    def apply_holds(self) -> None:
        """Hold its clients' events while either hold lasts; send them once neither does."""
        for outbox in self.outboxes:
            if self.guard_held or self.resync_held:
                outbox.hold()
            else:
                outbox.resume()

    def end(self, reason: str) -> None:
        """Its access ended: every client of it ends, sent nothing more."""
        self.ended = True
        for outbox in self.outboxes:
            outbox.close(reason)


class FeedUpstream(Upstream):
    """A thread's feed, shared by every client of the thread on this edge."""

    def __init__(
        self, link: EdgeLink, request: RequestEnvelope, forget: Callable[[Upstream], None]
    ) -> None:
        super().__init__(link, request, forget)
        self.share = f"{link.id}.{uuid.uuid4().hex[:16]}"
        self.last = 0  # the newest event id this edge has from the primary
        # Clients whose catch-up ends before this would miss events: the upstream began after
        # it, or its recent events no longer reach back that far.
        self.floor = 0
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
        return RequestEnvelope(
            base.method, base.path, query, headers, b"", base.client, scheme=base.scheme
        )

    async def open(self) -> ResponseEnvelope:
        """Open (or reopen) the thread's stream; the first opening says where it begins."""
        first = not self.opened
        head = await super().open()
        if head.status == 200 and first:
            self.floor = int(head.header(CURSOR_HEADER.encode()) or b"0")
            # Events may have arrived before the answer did.
            self.last = max(self.last, self.floor)
        return head

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
        member = FeedMember(uuid.uuid4().hex[:16], opening, credential, {outbox})
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
            (SHARE_HEADER.encode(), self.share.encode()),
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
            task = self.link.leave_shared(self.primary, self.share, member.id)
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
            task = self.link.leave_shared(self.primary, self.share, member.id)
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
                    self._control(data)
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

    def _control(self, data: bytes) -> None:
        """What the primary's access guard said of one member, at this point of the stream."""
        try:
            note = json.loads(data)
            client, _, joining = str(note["member"]).rpartition(".")
            number = int(note["n"])
            member = self.members.get(client)
        except (ValueError, KeyError, TypeError):
            return
        if member is None or joining != str(member.joining):
            return  # an earlier joining's, or a client that left
        if "end" in note:  # its clients' connections end, and leave
            member.judged(MemberState(number, ENDED, str(note["end"])))
        elif "hold" in note or "resume" in note:
            member.judged(MemberState(number, HELD if "hold" in note else LIVE))
