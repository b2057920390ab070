"""The live conversation's pure parts: μ-law tables, resampling lengths, what was heard."""

from __future__ import annotations

import math
import struct

import pytest

from voicestack.voice.realtime.codec import Resampler, mulaw_to_pcm16, pcm16_to_mulaw
from voicestack.voice.realtime.heard import SpokenReply, heard_prefix
from voicestack.voice.realtime.wire import ProtocolError, Start, parse_control, parse_start


def test_mulaw_matches_g711() -> None:
    samples = [0, 1, -1, 100, -100, 1000, -1000, 8000, -8000, 32767, -32768]
    pcm = struct.pack(f"<{len(samples)}h", *samples)
    # The codes and values of the G.711 reference tables (as the old stdlib audioop gave them).
    assert pcm16_to_mulaw(pcm).hex() == "ffff7ff272ce4ea0208000"
    back = struct.unpack(f"<{len(samples)}h", mulaw_to_pcm16(pcm16_to_mulaw(pcm)))
    assert back == (0, 0, 0, 104, -104, 988, -988, 7932, -7932, 32124, -32124)


def test_resampling_keeps_the_duration() -> None:
    tone = struct.pack(
        "<8000h", *(round(8000 * math.sin(2 * math.pi * 440 * n / 8000)) for n in range(8000))
    )
    up = Resampler(8000, 16000)
    out = b"".join(up(tone[i : i + 320]) for i in range(0, len(tone), 320)) + up(b"", last=True)
    assert len(out) == 2 * len(tone)


def test_heard_words_are_whole_sentences_then_a_share_of_the_words() -> None:
    reply = SpokenReply("msg_1")
    reply.add("One two three four.", 1000)
    reply.add("Five six seven eight nine ten.", 1200)
    assert reply.heard_words() == ""
    reply.played_ms = 999
    assert reply.heard_words() == "One two three"
    reply.played_ms = 1000 + 700  # 58% of six words
    assert reply.heard_words() == "One two three four. Five six seven"
    reply.played_ms = 5000
    assert reply.heard_words() == "One two three four. Five six seven eight nine ten."


def test_the_cut_is_a_prefix_of_the_saved_text() -> None:
    text = "**One** two.\nThree four five."
    assert heard_prefix(text, "One two. Three") == "**One** two.\nThree"
    assert heard_prefix(text, "") == ""
    assert heard_prefix(text, "Nothing like it") == "Nothing like it"


def test_start_and_controls_are_parsed_exactly() -> None:
    assert parse_start('{"type": "start", "sampleRate": 8000, "format": "mulaw"}') == Start(
        8000, "mulaw"
    )
    with pytest.raises(ProtocolError) as refused:
        parse_start('{"type": "start", "sampleRate": 16000.0, "format": "pcm16"}')
    assert (refused.value.code, refused.value.close) == ("unsupported_sample_rate", 1008)
    with pytest.raises(ProtocolError) as refused:
        parse_control('{"type": "played", "messageId": "m", "ms": -1}')
    assert (refused.value.code, refused.value.close) == ("invalid_message", None)
