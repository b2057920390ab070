"""`voicestack eval` speaks a turn: with the provider's speech model, or on the audio socket."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.support.agent import marker
from tests.support.evals import (
    eval_fixtures,
    json_report,
    run_eval,
    scenario_file,
)
from tests.support.server import ServerProcess
from tests.support.voice import requires_espeak
from voicestack.testing.fake_openai import FakeOpenAI
from voicestack.testing.fake_openai.audio import speech_pcm, wav_bytes

desk, fake = eval_fixtures()


def test_without_espeak_ng_a_spoken_turn_is_synthesized_by_the_provider(
    desk: ServerProcess, fake: FakeOpenAI, tmp_path: Path
) -> None:
    mark = marker()
    said = "Is the kitchen still open?"
    speech = wav_bytes(speech_pcm(said))
    fake.script(
        {
            "transcript": f"is the kitchen open {mark}",
            "expect_sha256": hashlib.sha256(speech).hexdigest(),
        },
        {"match": mark, "text": "It is."},
    )
    path = scenario_file(tmp_path, "spoken.yaml", f"name: asks aloud\nturns:\n  - say: {said}\n")
    no_programs = tmp_path / "bin"
    no_programs.mkdir()
    result = run_eval(
        desk,
        path,
        "--speech-model",
        "tts-9",
        provider=fake.api_base,
        env={"PATH": str(no_programs)},
    )

    assert (result.exit_code, result.stderr.splitlines()[0]) == (
        0,
        "spoken turns: the speech model tts-9",
    ), result.output
    [request] = fake.requests("speech")
    assert request["body"] == {
        "model": "tts-9",
        "voice": "alloy",
        "input": said,
        "response_format": "wav",
    }


@requires_espeak
def test_voice_realtime_says_a_turn_on_the_audio_socket(
    desk: ServerProcess, fake: FakeOpenAI, tmp_path: Path
) -> None:
    mark = marker()
    fake.script(
        {"transcript": f"make it three {mark}"},
        {"match": mark, "text": "Three it is."},
    )
    path = scenario_file(
        tmp_path,
        "live.yaml",
        "name: says it live\nturns:\n  - say: make it three people please\n"
        "    expect: {reply_contains: three, max_first_token_ms: 60000}\n",
    )
    result = run_eval(desk, path, "--voice", "realtime", "--json", tmp_path / "r.json")

    assert result.exit_code == 0, result.output
    [turn] = json_report(tmp_path / "r.json")["scenarios"][0]["results"][0]["turns"]
    assert (turn["kind"], turn["transcript"], turn["status"], turn["reply"]) == (
        "say",
        f"make it three {mark}",
        "complete",
        "Three it is.",
    )
    # Heard by the server's turn-taking: the reply carries a live turn's metrics.
    assert turn["voice"]["interrupted"] is False
    assert turn["voice"]["audioInSeconds"] > 1
    [heard] = fake.requests("transcription")
    assert heard["body"]["file"]["content_type"] == "audio/wav"
