"""What a conversation cost: a turn's usage priced with the price table of `voicestack.toml`.

A reply's `cost_usd` is its turn's cost, fixed when the reply ends: the transcription of the
audio it answers (priced by the transcribe model's `audio_in_per_min`), the chat model's tokens
(`input_per_mtok`, `output_per_mtok` of the reply's model) and its speech (the speech model's
`speech_per_mchar`). A part the turn used whose model has no such price makes the whole cost
unknown (NULL): a partial sum would read as the total, and a guessed price would be wrong. So
does an answer whose provider reported no token counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from voicestack.config import ModelPrice, Settings
from voicestack.store.db import ReadDB, WriteDB

# Costs are sums of products of floats: rounding keeps `0.1 + 0.2` noise out of the API.
DIGITS = 10


@dataclass(frozen=True)
class TurnUsage:
    """What one turn used: its reply's tokens and speech, and the audio its reply answers."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    audio_in_seconds: float = 0.0
    speech_chars: int = 0


@dataclass(frozen=True)
class Pricing:
    """The price table, and the models a turn's parts are priced by."""

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

    def turn_cost(self, usage: TurnUsage, model: str | None = None) -> float | None:
        """The turn's cost in USD, its tokens priced by `model` (default: the chat model);
        None when a part it used has no price."""
        chat = model or self.chat_model
        parts = (
            (usage.prompt_tokens / 1e6, chat, "input_per_mtok"),
            (usage.completion_tokens / 1e6, chat, "output_per_mtok"),
            (usage.audio_in_seconds / 60, self.transcribe_model, "audio_in_per_min"),
            (usage.speech_chars / 1e6, self.speech_model, "speech_per_mchar"),
        )
        total = 0.0
        for quantity, priced_by, name in parts:
            if quantity <= 0:
                continue  # a part the turn did not use needs no price
            rate = self._rate(priced_by, name)
            if rate is None:
                return None
            total += quantity * rate
        return round(total, DIGITS)


def price_reply(db: WriteDB, message_id: str, pricing: Pricing) -> float | None:
    """Write the ended reply's `cost_usd` (NULL when unknown) and the model that wrote it, if
    the row names none, in the caller's transaction; returns the cost."""
    row = db.one(
        "SELECT m.model, m.prompt_tokens, m.completion_tokens, m.speech_chars, m.text,"
        " m.tool_call_count, coalesce(u.audio_in_seconds, 0) AS audio_in_seconds"
        " FROM messages m LEFT JOIN messages u ON u.id = m.reply_to WHERE m.id = ?",
        (message_id,),
    )
    if row is None:
        return None
    model = row["model"] or pricing.chat_model
    usage = TurnUsage(
        row["prompt_tokens"], row["completion_tokens"], row["audio_in_seconds"], row["speech_chars"]
    )
    cost = pricing.turn_cost(usage, model)
    if not usage.prompt_tokens and (row["text"] or row["tool_call_count"]):
        cost = None  # the model answered, but its provider reported no token counts
    db.execute(
        "UPDATE messages SET cost_usd = ?, model = ? WHERE id = ?", (cost, model, message_id)
    )
    return cost


# The turns an aggregate counts: model replies (a person's answer, `messages.post`, has no
# `reply_to` and costs nothing) joined to the message each answers, whose audio is the turn's.
TURNS = "messages m JOIN threads t ON t.id = m.thread_id LEFT JOIN messages u ON u.id = m.reply_to"
TURN_FILTER = "m.role = 'assistant' AND m.reply_to IS NOT NULL"
# A turn that ended with usage but no cost: a model of it has no price (or it ended without
# being priced, as after a crash).
UNPRICED = (
    "m.status IN ('complete', 'failed', 'interrupted') AND m.cost_usd IS NULL"
    " AND (m.prompt_tokens + m.completion_tokens + m.speech_chars"
    " + coalesce(u.audio_in_seconds, 0)) > 0"
)


def total_cost(known: float | None, unpriced: int) -> float | None:
    """The sum of the known costs, or None when any turn's cost is unknown."""
    if unpriced:
        return None
    return round(known or 0.0, DIGITS)


def thread_cost(db: ReadDB | WriteDB, thread_id: str) -> float | None:
    """The thread's cost: the sum of its ended turns' costs; None when one of them has none."""
    row = db.one(
        f"SELECT sum(m.cost_usd) AS known, count(*) FILTER (WHERE {UNPRICED}) AS unpriced"
        f" FROM {TURNS} WHERE m.thread_id = ? AND {TURN_FILTER}",
        (thread_id,),
    )
    assert row is not None
    return total_cost(row["known"], row["unpriced"])
