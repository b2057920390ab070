"""What a conversation cost: each reply's parts priced with the price table of `voicestack.toml`.

A reply is written in parts, one per agent that answered in it (voicestack/agent/reply_parts.py).
A part's cost is its tokens at its own model's `input_per_mtok` and `output_per_mtok`, the
turn's transcribed audio (on its first part) at the transcribe model's `audio_in_per_min`, and
its speech at the speech model's `speech_per_mchar`. A reply's `cost_usd` is the sum of its
parts', fixed when the reply ends, however it ends: finished, failed, cancelled, cut by the
listener or a hang-up, stopped with the server, or found streaming after a crash.

Two unknowns are kept apart:
- a part that used something whose model has no price has no cost (NULL), and neither has its
  reply, its thread or a summary group holding it: a partial sum would read as the total, and a
  guessed price would be wrong;
- a step that ended before its provider reported token counts (a reply stopped mid-stream, a
  crash, a provider that reports none) is counted in `unreported_steps`, and everything known is
  still priced: such a cost is a lower bound, never a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from voicestack.agent.reply_parts import has_parts, open_part
from voicestack.config import ModelPrice, Settings
from voicestack.store.db import ReadDB, WriteDB

# Costs are sums of products of floats: rounding keeps `0.1 + 0.2` noise out of the API.
DIGITS = 10


@dataclass(frozen=True)
class PartUsage:
    """What one part of a reply used, and the chat model that wrote it."""

    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    unreported_steps: int = 0
    audio_in_seconds: float = 0.0
    speech_chars: int = 0


@dataclass(frozen=True)
class Pricing:
    """The price table, and the models a reply's parts are priced by."""

    prices: Mapping[str, ModelPrice] = field(default_factory=dict)
    chat_model: str = "gpt-4o-mini"
    transcribe_model: str = "gpt-4o-mini-transcribe"
    speech_model: str = "gpt-4o-mini-tts"

    @classmethod
    def from_settings(cls, settings: Settings) -> Pricing:
        """The server's `prices`, its chat model (for replies that name none) and audio models."""
        return cls(
            dict(settings.prices),
            settings.model,
            settings.transcribe_model,
            settings.speech_model,
        )

    def _rate(self, model: str, name: str) -> float | None:
        price = self.prices.get(model)
        rate: float | None = getattr(price, name) if price is not None else None
        return rate

    def part_cost(self, usage: PartUsage) -> float | None:
        """The part's cost in USD; None when something it used has no price. Its unreported
        steps cost what is unknown, so they need the model's price but add nothing to it."""
        chat = usage.model
        parts = (
            (usage.prompt_tokens / 1e6, chat, "input_per_mtok"),
            (usage.completion_tokens / 1e6, chat, "output_per_mtok"),
            (usage.audio_in_seconds / 60, self.transcribe_model, "audio_in_per_min"),
            (usage.speech_chars / 1e6, self.speech_model, "speech_per_mchar"),
        )
        if usage.unreported_steps and self._rate(chat, "input_per_mtok") is None:
            return None
        total = 0.0
        for quantity, priced_by, name in parts:
            if quantity <= 0:
                continue  # a part the reply did not use needs no price
            rate = self._rate(priced_by, name)
            if rate is None:
                return None
            total += quantity * rate
        return round(total, DIGITS)


_PART_COLUMNS = (
    "id, model, prompt_tokens, completion_tokens, unreported_steps, audio_in_seconds, speech_chars"
)


def price_reply(db: WriteDB, message_id: str, pricing: Pricing) -> float | None:
    """Price each part of the ended reply and write its `cost_usd`, the sum of its parts' (NULL
    when one is unknown), in the caller's transaction; returns the cost. A reply stopped before
    it was claimed gets its one part here, with its turn's transcribed audio."""
    row = db.one(
        "SELECT m.agent, m.model, m.reply_to, coalesce(u.audio_in_seconds, 0) AS audio_in"
        " FROM messages m LEFT JOIN messages u ON u.id = m.reply_to WHERE m.id = ?",
        (message_id,),
    )
    if row is None or row["reply_to"] is None:
        return None  # not a model's reply: a person's answer costs nothing
    if not has_parts(db, message_id):
        open_part(db, message_id, row["agent"], row["model"], row["audio_in"])
    total: float | None = 0.0
    for part in db.all(
        f"SELECT {_PART_COLUMNS} FROM reply_parts WHERE message_id = ?", (message_id,)
    ):
        model = part["model"] or pricing.chat_model
        usage = PartUsage(
            model,
            part["prompt_tokens"],
            part["completion_tokens"],
            part["unreported_steps"],
            part["audio_in_seconds"],
            part["speech_chars"],
        )
        cost = pricing.part_cost(usage)
        db.execute(
            "UPDATE reply_parts SET model = ?, cost_usd = ? WHERE id = ?", (model, cost, part["id"])
        )
        total = None if cost is None or total is None else total + cost
    cost = round(total, DIGITS) if total is not None else None
    db.execute(
        "UPDATE messages SET cost_usd = ?, model = coalesce(model, ?) WHERE id = ?",
        (cost, pricing.chat_model, message_id),
    )
    return cost


# The price table of the server this process runs, for the paths that end a reply from a plain
# function of the database (a cancel, a person's answer, a barge-in or hang-up): the Runtime
# installs it once at start-up, as it does its agents.
_installed: Pricing | None = None


def install_pricing(pricing: Pricing) -> None:
    """Make `pricing` the one replies stopped by a function of the database are priced with."""
    global _installed
    _installed = pricing


def price_stopped_reply(db: WriteDB, message_id: str) -> None:
    """Fix the cost of a reply someone stopped (before it ran, too), with the installed price
    table; a reply still running in this server is priced again as its task ends."""
    if _installed is not None:
        price_reply(db, message_id, _installed)


# The parts an aggregate counts: those of model replies (a person's answer, `messages.post`,
# has no part and costs nothing), with their reply and its thread.
PARTS = "reply_parts p JOIN messages m ON m.id = p.message_id JOIN threads t ON t.id = m.thread_id"
PART_FILTER = "m.role = 'assistant' AND m.reply_to IS NOT NULL"
# A part of an ended reply that used something and has no cost: a model of it has no price.
UNPRICED = (
    "m.status IN ('complete', 'failed', 'interrupted') AND p.cost_usd IS NULL"
    " AND (p.prompt_tokens + p.completion_tokens + p.unreported_steps + p.speech_chars"
    " + p.audio_in_seconds) > 0"
)


def total_cost(known: float | None, unpriced: int) -> float | None:
    """The sum of the known costs, or None when any part's cost is unknown."""
    if unpriced:
        return None
    return round(known or 0.0, DIGITS)


def thread_cost(db: ReadDB | WriteDB, thread_id: str) -> float | None:
    """The thread's cost: the sum of its replies' parts' costs; None when one has none."""
    row = db.one(
        f"SELECT sum(p.cost_usd) AS known, count(*) FILTER (WHERE {UNPRICED}) AS unpriced"
        f" FROM {PARTS} WHERE m.thread_id = ? AND {PART_FILTER}",
        (thread_id,),
    )
    assert row is not None
    return total_cost(row["known"], row["unpriced"])
