"""The fake provider's /v1/embeddings (issue 17): deterministic vectors in which similar texts
are near, at the asked size and encoding, with scripted errors and wrong-size vectors."""

from __future__ import annotations

import math

import openai
import pytest

from voicestack.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.anyio

MODEL = "text-embedding-3-small"


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def vectors(
    client: openai.AsyncOpenAI, texts: list[str], **options: object
) -> list[list[float]]:
    answer = await client.embeddings.create(model=MODEL, input=texts, **options)  # type: ignore[arg-type]
    return [item.embedding for item in answer.data]


async def test_vectors_are_unit_deterministic_and_near_for_similar_texts(
    openai_client: openai.AsyncOpenAI,
) -> None:
    texts = [
        "Where did I write the router passwords?",
        "The router password is on the fridge.",
        "Pasta with tomatoes for lunch tomorrow.",
    ]
    as_base64 = await vectors(openai_client, texts)  # the client asks for base64 by default
    as_floats = await vectors(openai_client, texts, encoding_format="float")
    other_model = await openai_client.embeddings.create(model="other-embed", input=texts[0])
    short = await vectors(openai_client, texts[:1], dimensions=64)

    assert [len(v) for v in as_base64] == [1536, 1536, 1536]
    assert all(math.isclose(cosine(v, v), 1.0, rel_tol=1e-5) for v in as_base64)
    pairs = zip(as_base64, as_floats, strict=True)
    assert all(
        math.isclose(x, y, abs_tol=1e-6) for a, b in pairs for x, y in zip(a, b, strict=True)
    )
    related, unrelated = cosine(as_base64[0], as_base64[1]), cosine(as_base64[0], as_base64[2])
    assert related > unrelated + 0.05
    assert cosine(as_base64[0], other_model.data[0].embedding) < 0.5  # another model's space
    assert len(short[0]) == 64


async def test_plans_answer_errors_and_vectors_of_the_wrong_size(
    fake: FakeOpenAI, openai_client: openai.AsyncOpenAI
) -> None:
    fake.script(
        {"kind": "embedding", "match": "boom", "error": {"status": 503}},
        {"kind": "embedding", "match": "tiny", "vector_dimensions": 3},
    )
    with pytest.raises(openai.InternalServerError):
        await vectors(openai_client, ["a boom here"])
    tiny = await vectors(openai_client, ["tiny one", "and another"])
    after = await vectors(openai_client, ["tiny one"])
    with pytest.raises(openai.BadRequestError) as refused:
        await vectors(openai_client, [], dimensions=64)
    assert [len(v) for v in tiny] == [3, 3]
    assert len(after[0]) == 1536  # the plan was used up
    assert refused.value.param == "input"
