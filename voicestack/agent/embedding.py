"""Embeddings from any OpenAI-compatible provider: `embeddings.create` on the chat's client kind.

`--embedding-model` (default text-embedding-3-small; '' turns semantic memory off),
`--embedding-dimensions` (sent as `dimensions` only when given: many compatible servers refuse
it), `--embedding-base-url` and `--embedding-api-key` (default: the chat's server and key; the
chat's key never goes to another server). The provider gets no retries of its own: a failed
embedding fails its job, and the scheduler's backoff is the retry, visible in `scheduler.jobs`.
Concurrent jobs' texts share requests (voicestack.agent.embedding_batch).

Vectors are asked for as base64 and kept as float32 arrays (`Vector`), the bytes sqlite-vec
stores: turning each text's 1,536 numbers into Python floats, and back into bytes for the
index, spent the event loop's and the writer's time for nothing (bench/results/memory.md), and
a cached vector takes 6 KB instead of 50. A compatible server that refuses `encoding_format`
base64 (400 or 422) is asked again for plain numbers, and from then on only for those once it
answered so. A vector holding NaN or an infinity, or only zeros, is refused: one would poison
every distance computed against it.

Queries embed their words too. A query runs on a reader thread, not on the event loop, so it
asks through a blocking client; every text's vector is kept in a small cache, so a watched
search re-run by a commit never calls the provider again, and the job that embeds a message
just recalled from finds its vector there.
"""

from __future__ import annotations

import base64
import logging
import math
import sys
import threading
from array import array
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeAlias

from voicestack.agent.embedding_batch import EmbeddingBatcher
from voicestack.agent.llm import ChatProvider, ProviderError, ProviderSettings
from voicestack.agent.llm_errors import (
    FOLLOW_REDIRECTS,
    ProviderRole,
    describe_failure,
    redact,
)
from voicestack.config import Settings

if TYPE_CHECKING:
    import openai

# The sizes of well-known models' vectors, so the index can be made before the first answer.
KNOWN_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
CACHE_SIZE = 2048

log = logging.getLogger(__name__)


# A vector as sqlite-vec stores it: float32 numbers (array("f"), little-endian in its bytes).
Vector: TypeAlias = "array[float]"


def _refusals() -> tuple[type[openai.APIStatusError], ...]:
    """How compatible servers refuse an `encoding_format` they do not know (asked once a call
    failed)."""
    import openai  # the SDK loads on first use (voicestack/agent/llm.py)

    return (openai.BadRequestError, openai.UnprocessableEntityError)


EMBEDDING_ROLE = ProviderRole(
    name="embedding",
    key_setting="--embedding-api-key (VOICESTACK_EMBEDDING_API_KEY)",
    not_configured="No embedding provider is configured: set --embedding-base-url, or"
    " OPENAI_API_KEY or --openai-base-url, which it defaults to; --embedding-model '' turns"
    " semantic memory off.",
)


def as_vector(embedding: Any) -> Vector:
    """An answer's embedding (base64 of little-endian float32, or a list of numbers from a
    server that ignores `encoding_format`) as a Vector; raises ProviderError for anything else."""
    try:
        if isinstance(embedding, str):
            vector = array("f", base64.b64decode(embedding, validate=True))
            if sys.byteorder == "big":
                vector.byteswap()
        else:
            vector = array("f", embedding)
    except (TypeError, ValueError) as exc:
        raise ProviderError(
            "provider_bad_response", f"The embedding provider answered an unreadable vector: {exc}"
        ) from None
    # A NaN or an infinity makes the sum non-finite; float32 numbers cannot overflow a double's.
    if not vector or not math.isfinite(sum(vector)):
        raise ProviderError(
            "provider_bad_response",
            "The embedding provider answered a vector that is empty or holds NaN or infinity.",
        )
    if vector.count(0.0) == len(vector):  # no direction: every cosine distance to it is NaN
        raise ProviderError(
            "provider_bad_response", "The embedding provider answered a vector of zeros."
        )
    return vector


class EmbeddingSizeError(ProviderError):
    """The provider answered vectors of another size than the memory index holds."""


@dataclass(frozen=True)
class EmbeddingSettings:
    """Which model embeds, at what size, through which provider."""

    model: str
    dimensions: int | None
    provider: ProviderSettings

    @classmethod
    def from_settings(cls, settings: Settings) -> EmbeddingSettings:
        """The --embedding-* flags, the provider defaulting to the chat's server and key."""
        own_server = bool(settings.embedding_base_url)
        key = settings.embedding_api_key
        if key is None and not own_server:
            key = settings.openai_api_key
        provider = ProviderSettings(
            base_url=settings.embedding_base_url if own_server else settings.openai_base_url,
            api_key=key.get_secret_value() if key is not None else None,
            model=settings.embedding_model,
            timeout_s=settings.provider_timeout_s,
            max_retries=0,
            role=EMBEDDING_ROLE,
        )
        return cls(settings.embedding_model, settings.embedding_dimensions, provider)

    @property
    def expected_dimensions(self) -> int | None:
        """The vectors' size as far as it is known before any answer."""
        return self.dimensions or KNOWN_DIMENSIONS.get(self.model)


class Embedder:
    """Turns texts into vectors with one model, checking each answer's shape."""

    def __init__(self, settings: EmbeddingSettings) -> None:
        """Prepare the clients; nothing touches the network yet."""
        self.settings = settings
        self._provider = ChatProvider(settings.provider)
        self._sync: openai.OpenAI | None = None
        self._cache: OrderedDict[str, Vector] = OrderedDict()
        self._lock = threading.Lock()
        self._batcher = EmbeddingBatcher(self._request)
        self._encoding = "base64"

    @property
    def enabled(self) -> bool:
        """True when a model is named and a provider is configured."""
        return bool(self.settings.model) and self._provider.configured

    @property
    def model(self) -> str:
        """The embedding model's name."""
        return self.settings.model

    def _kwargs(self, texts: list[str]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.settings.model,
            "input": texts,
            "encoding_format": self._encoding,
        }
        if self.settings.dimensions is not None:
            kwargs["dimensions"] = self.settings.dimensions
        return kwargs

    def cached(self, text: str) -> Vector | None:
        """The vector of `text` if this process has it already."""
        with self._lock:
            vector = self._cache.get(text)
            if vector is not None:
                self._cache.move_to_end(text)
            return vector

    def _remember(self, text: str, vector: Vector) -> None:
        with self._lock:
            self._cache[text] = vector
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)

    async def embed(self, texts: list[str], dimensions: int | None = None) -> list[Vector]:
        """One vector per text, in order, each of `dimensions` numbers when given; raises
        ProviderError (a failed call, or an answer that is not one vector per text) or
        EmbeddingSizeError. Only vectors that passed the size check are cached."""
        vectors: list[Vector | None] = [self.cached(text) for text in texts]
        missing = [i for i, vector in enumerate(vectors) if vector is None]
        if missing:
            found = await self._batcher.embed([texts[i] for i in missing])
            if dimensions is not None:
                self.check_size(found, dimensions)
            for i, vector in zip(missing, found, strict=True):
                vectors[i] = vector
                self._remember(texts[i], vector)
        result = [vector for vector in vectors if vector is not None]
        if dimensions is not None:
            self._check_cached(texts, result, dimensions)
        return result

    def _floats_instead(self, kwargs: dict[str, Any]) -> dict[str, Any] | None:
        """The same request asking for plain numbers, when the refused one asked for base64;
        None otherwise (the refusal stands)."""
        if kwargs["encoding_format"] != "base64":
            return None
        return {**kwargs, "encoding_format": "float"}

    def _use_floats(self, refusal: openai.APIStatusError) -> None:
        """A request refused as base64 was answered as plain numbers: ask for those from now
        on (said once in the log)."""
        with self._lock:
            first = self._encoding == "base64"
            self._encoding = "float"
        if first:
            log.warning(
                "The embedding provider at %s refused a base64 request (%s %s) and answered"
                " it in plain numbers; asking it for those from now on.",
                self._provider.where,
                refusal.status_code,
                refusal.message,
            )

    async def _request(self, texts: list[str]) -> list[Vector]:
        async def send(client: openai.AsyncOpenAI) -> Any:
            kwargs = self._kwargs(texts)
            try:
                return await client.embeddings.create(**kwargs)
            except _refusals() as refusal:
                floats = self._floats_instead(kwargs)
                if floats is None:
                    raise
                # Any other fault of the request (a text too long, a bad size) fails again
                # here, and nothing changes.
                answer = await client.embeddings.create(**floats)
                self._use_floats(refusal)
                return answer

        answer = await self._provider.request(self.settings.model, send)
        return self._vectors(answer, len(texts))

    def embed_query(
        self, text: str, timeout_s: float = 10.0, dimensions: int | None = None
    ) -> Vector:
        """The vector of `text`, of `dimensions` numbers when given, blocking (for queries on
        reader threads); raises ProviderError with the same codes as the jobs', or
        EmbeddingSizeError. Only a vector that passed the size check is cached."""
        vector = self.cached(text)
        if vector is not None:
            if dimensions is not None:
                self._check_cached([text], [vector], dimensions)
            return vector
        if not self.enabled:
            raise ProviderError("provider_not_configured", EMBEDDING_ROLE.not_configured)
        import openai  # the SDK loads on first use (voicestack/agent/llm.py)

        client = self._sync_client()
        try:
            kwargs = self._kwargs([text])
            try:
                answer = client.embeddings.create(**kwargs, timeout=timeout_s)
            except _refusals() as refusal:
                floats = self._floats_instead(kwargs)
                if floats is None:
                    raise
                answer = client.embeddings.create(**floats, timeout=timeout_s)
                self._use_floats(refusal)
        except openai.OpenAIError as exc:
            code, message, retryable = describe_failure(
                exc,
                EMBEDDING_ROLE,
                self._provider.where,
                responded=False,
                after="",
                model=self.settings.model,
                timeout_s=timeout_s,
            )
            message = redact(message, self.settings.provider.api_key)
            raise ProviderError(code, message, retryable=retryable) from exc
        (vector,) = self._vectors(answer, 1)
        if dimensions is not None:
            self.check_size([vector], dimensions)
        self._remember(text, vector)
        return vector

    def _check_cached(self, texts: list[str], vectors: list[Vector], dimensions: int) -> None:
        # A vector cached before the index changed size must not stick: forget it, so the
        # next attempt asks the provider again.
        try:
            self.check_size(vectors, dimensions)
        except EmbeddingSizeError:
            with self._lock:
                for text, vector in zip(texts, vectors, strict=True):
                    if len(vector) != dimensions:
                        self._cache.pop(text, None)
            raise

    def _sync_client(self) -> openai.OpenAI:
        import openai

        with self._lock:
            if self._sync is None:
                provider = self.settings.provider
                self._sync = openai.OpenAI(
                    base_url=provider.base_url,
                    api_key=provider.api_key or "no-key-needed",
                    max_retries=0,
                    timeout=provider.timeout_s,
                    http_client=openai.DefaultHttpxClient(
                        timeout=provider.timeout_s, follow_redirects=FOLLOW_REDIRECTS
                    ),
                )
            return self._sync

    def _vectors(self, answer: Any, count: int) -> list[Vector]:
        data = sorted(getattr(answer, "data", None) or [], key=lambda item: item.index)
        if len(data) != count:
            raise ProviderError(
                "provider_bad_response",
                f"The embedding provider at {self._provider.where} answered {len(data)} vectors"
                f" for {count} texts.",
            )
        return [as_vector(item.embedding) for item in data]

    def check_size(self, vectors: list[Vector], dimensions: int) -> None:
        """Raise EmbeddingSizeError unless every vector has `dimensions` numbers."""
        for vector in vectors:
            if len(vector) != dimensions:
                raise EmbeddingSizeError(
                    "embedding_wrong_size",
                    f"The embedding provider at {self._provider.where} returned a vector of"
                    f" {len(vector)} dimensions from {self.settings.model!r}, but the memory"
                    f" index holds {dimensions}: check --embedding-dimensions and the model, or"
                    " run `voicestack memory reindex` to re-embed everything at the new size.",
                )

    def with_settings(self, **changes: Any) -> Embedder:
        """Another embedder with some settings changed (the CLI's reindex)."""
        return Embedder(replace(self.settings, **changes))

    async def aclose(self) -> None:
        """Stop the requests under way and close the provider's connections."""
        await self._batcher.aclose()
        await self._provider.aclose()
        if self._sync is not None:
            self._sync.close()
