"""Reading a provider's embeddings (issue 17): base64 float32 or plain numbers become float32
vectors; an unreadable, empty or non-finite vector is the provider's error, never stored."""

from __future__ import annotations

import base64
import struct

import pytest

from voicestack.agent.embedding import as_vector
from voicestack.agent.llm import ProviderError


def packed(*numbers: float) -> str:
    return base64.b64encode(struct.pack(f"<{len(numbers)}f", *numbers)).decode()


def test_base64_and_plain_numbers_give_the_same_float32_vector() -> None:
    assert list(as_vector(packed(0.5, -0.25, 1.0))) == [0.5, -0.25, 1.0]
    assert list(as_vector([0.5, -0.25, 1.0])) == [0.5, -0.25, 1.0]


@pytest.mark.parametrize(
    ("embedding", "reason"),
    [
        (packed(0.5, float("nan")), "empty or holds NaN or infinity"),
        (packed(float("inf"), 0.5), "empty or holds NaN or infinity"),
        ([0.5, float("-inf")], "empty or holds NaN or infinity"),
        ([], "empty or holds NaN or infinity"),
        (packed(0.0, 0.0, -0.0), "a vector of zeros"),
        ([1e300], "empty or holds NaN or infinity"),  # too big for float32: infinity
        ("not base64!", "unreadable vector"),
        (base64.b64encode(b"abc").decode(), "unreadable vector"),
        ([0.5, "x"], "unreadable vector"),
        (None, "unreadable vector"),
    ],
)
def test_a_vector_that_cannot_be_stored_is_the_providers_bad_response(
    embedding: object, reason: str
) -> None:
    with pytest.raises(ProviderError) as raised:
        as_vector(embedding)
    assert raised.value.code == "provider_bad_response"
    assert reason in str(raised.value)
