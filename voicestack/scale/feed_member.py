"""An edge's record of one client's membership of a shared thread stream on its primary
(voicestack/agent/shared_feeds.py), and what the primary's access guard last said of it."""

from __future__ import annotations

from dataclasses import dataclass, field

from voicestack.agent.shared_feeds import ENDED, HELD, MemberState
from voicestack.reactive.access import ACCESS_REMOVED
from voicestack.reactive.channel import FeedChannel
from voicestack.scale.envelope import RequestEnvelope


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
