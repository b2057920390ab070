"""What the user heard of a reply: its sentences' audio lengths against the played milliseconds.

The client reports how much of a reply's audio it has played (`played {"messageId", "ms"}`). A
client that never reports it is taken to play audio as it arrives, paced at real time from the
reply's first frame (`assume_played`), so its cut is an estimate rather than empty.
Each sentence sent has a known audio length, so the played time falls within one sentence; the
words heard of that sentence are estimated from the fraction of it played (words take roughly
equal time). The cut is a prefix of the reply's saved text, so the next model call sees exactly
the words that were spoken before the interruption, in the reply's own spelling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SpokenSentence:
    """One sentence sent to the client: its text and where its audio starts and ends."""

    text: str
    start_ms: float
    duration_ms: float


@dataclass(slots=True)
class SpokenReply:
    """The sentences of one reply sent so far, and how much the client says it played."""

    message_id: str
    sentences: list[SpokenSentence] = field(default_factory=list)
    played_ms: int = 0

    @property
    def sent_ms(self) -> float:
        """The length of all audio sent for this reply."""
        last = self.sentences[-1] if self.sentences else None
        return last.start_ms + last.duration_ms if last else 0.0

    def assume_played(self, ms: float) -> None:
        """Take `ms` as played (capped at what was sent) unless more was reported."""
        self.played_ms = max(self.played_ms, int(min(ms, self.sent_ms)))

    def add(self, text: str, duration_ms: float) -> None:
        """Record a sentence whose audio is about to be sent."""
        self.sentences.append(SpokenSentence(text, self.sent_ms, duration_ms))

    def heard_words(self) -> str:
        """The words played so far, sentence by sentence, the last one cut at a word."""
        heard: list[str] = []
        for sentence in self.sentences:
            end = sentence.start_ms + sentence.duration_ms
            if self.played_ms >= end:
                heard.append(sentence.text)
                continue
            if self.played_ms > sentence.start_ms and sentence.duration_ms > 0:
                words = sentence.text.split()
                share = (self.played_ms - sentence.start_ms) / sentence.duration_ms
                count = math.floor(share * len(words))
                if count:
                    heard.append(" ".join(words[:count]))
            break
        return " ".join(heard)


def heard_prefix(full_text: str, heard: str) -> str:
    """The prefix of `full_text` that says `heard` (its words, in order); `heard` itself when
    the text does not contain them in order (it was spoken from cleaned-up sentences)."""
    position = 0
    for word in heard.split():
        found = full_text.find(word, position)
        if found < 0:
            return heard
        position = found + len(word)
    return full_text[:position]
