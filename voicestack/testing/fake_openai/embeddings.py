"""POST /v1/embeddings for the fake OpenAI server: deterministic vectors in which similar texts
are near.

A text's vector is a bag of hashed features, its lowercased words and their character trigrams,
each adding +1 or -1 at a position chosen by a hash salted with the model name, then scaled to
length 1. Texts sharing words (or parts of words: "password" and "passwords") share features, so
their cosine similarity is high; unrelated texts are near orthogonal; another model gives other
vectors. The same text always gets the same vector, in every process.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import math
import re
import struct
from typing import Any

from starlette.responses import JSONResponse, Response

from voicestack.testing.fake_openai.plan import Plan
from voicestack.testing.fake_openai.wire import invalid_request

# The sizes of the real models' vectors; any other model name gets DEFAULT_DIMENSIONS.
MODEL_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
DEFAULT_DIMENSIONS = 1536
MAX_DIMENSIONS = 8192
MAX_INPUTS = 2048
_WORD_WEIGHT = 1.0
_TRIGRAM_WEIGHT = 0.5


def _features(text: str) -> list[tuple[str, float]]:
    features: list[tuple[str, float]] = []
    for word in re.findall(r"\w+", text.lower()):
        features.append((f"w:{word}", _WORD_WEIGHT))
        padded = f"^{word}$"
        features += [(f"t:{padded[i : i + 3]}", _TRIGRAM_WEIGHT) for i in range(len(padded) - 2)]
    return features


@functools.lru_cache(maxsize=1 << 16)
def _feature_hash(model: str, feature: str) -> int:
    # Words and trigrams recur from text to text: hashing each once keeps the fake cheap, so
    # in a benchmark it does not take the CPU the server under test needs.
    digest = hashlib.blake2b(f"{model}\x00{feature}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def fake_vector(text: str, model: str, dimensions: int) -> list[float]:
    """The unit vector the fake gives `text` from `model` at `dimensions` (deterministic)."""
    sums: dict[int, float] = {}
    for feature, weight in _features(text) or [("empty", 1.0)]:
        number = _feature_hash(model, feature)
        at = (number >> 1) % dimensions
        sums[at] = sums.get(at, 0.0) + (weight if number & 1 else -weight)
    norm = math.sqrt(sum(v * v for _, v in sorted(sums.items()))) or 1.0
    vector = [0.0] * dimensions
    for at, v in sums.items():
        vector[at] = v / norm
    return vector


def _inputs(raw: Any) -> list[str] | None:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and len(raw) <= MAX_INPUTS:
        if all(isinstance(item, str) for item in raw):
            return list(raw)
        # Token arrays: their numbers stand in for words.
        if all(isinstance(item, list) for item in raw):
            return [" ".join(map(str, item)) for item in raw]
        if all(isinstance(item, int) for item in raw):
            return [" ".join(map(str, raw))]
    return None


def validate_embeddings(body: Any) -> Response | None:
    """The real API's 400 for a body it would refuse, or None."""
    if not isinstance(body, dict):
        return invalid_request("The request body must be a JSON object.")
    if not body.get("model"):
        return invalid_request("you must provide a model parameter")
    if "input" not in body:
        return invalid_request(
            "Missing required parameter: 'input'.", param="input", code="missing_required_parameter"
        )
    if _inputs(body["input"]) is None:
        return invalid_request(
            "'input' must be a string, or a non-empty array of strings or of token arrays.",
            param="input",
        )
    dimensions = body.get("dimensions")
    if dimensions is not None and (
        not isinstance(dimensions, int) or not 1 <= dimensions <= MAX_DIMENSIONS
    ):
        return invalid_request(
            f"'dimensions' must be an integer from 1 to {MAX_DIMENSIONS}.", param="dimensions"
        )
    if body.get("encoding_format", "float") not in ("float", "base64"):
        return invalid_request(
            "'encoding_format' must be 'float' or 'base64'.", param="encoding_format"
        )
    return None


def embeddings_match_text(body: dict[str, Any]) -> str:
    """What a plan's `match` is looked for in: the inputs, one per line."""
    return "\n".join(_inputs(body["input"]) or [])


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def embeddings_response(plan: Plan | None, body: dict[str, Any]) -> Response:
    """The embeddings of the body's inputs, sized by `dimensions`, the model, or the plan."""
    model = str(body["model"])
    dimensions = body.get("dimensions") or MODEL_DIMENSIONS.get(model, DEFAULT_DIMENSIONS)
    if plan is not None and plan.vector_dimensions is not None:
        dimensions = plan.vector_dimensions
    encoding = body.get("encoding_format", "float")
    if plan is not None and plan.encodings is not None and encoding not in plan.encodings:
        return invalid_request(
            f"'encoding_format' must be one of {plan.encodings}.", param="encoding_format"
        )
    texts = _inputs(body["input"]) or []
    tokens = sum(max(1, len(re.findall(r"\w+", text))) for text in texts)
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": _encode(fake_vector(text, model, dimensions), encoding),
        }
        for index, text in enumerate(texts)
    ]
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )
