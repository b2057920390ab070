"""Finding what was said: full-text and vector candidates, fused by reciprocal rank.

A candidate is a message or a note, known by (source, id). Both searches are limited to what
the caller may read before they rank (a Scope), so a hidden thread never takes a place in the
ranking, and fusion never sees it.

Scores, higher is better:
- `text`: BM25's relevance (SQLite's `bm25()` negated);
- `vector`: cosine similarity of the query's and the best chunk's vectors (1 is identical);
- `hybrid`: reciprocal rank fusion, sum of 1/(60 + rank) over both lists, divided by its
  largest possible value, so a hit ranked first by both scores 1 and first by one only 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from voicestack.agent.memory_index import VECTOR_TABLE, has_vector_table, vector_blob
from voicestack.agent.records import MESSAGE_COLUMNS, message_from_row
from voicestack.agent.search_index import PENDING_TABLE
from voicestack.store.db import ReadDB

RRF_K = 60
SNIPPET_CHARS = 200
Key = tuple[str, str]  # ("message" | "note", id)


@dataclass(frozen=True)
class Scope:
    """What a search may look at: one thread, one user's threads and notes, or everything
    (`thread_id` and `user_id` both None: an admin, or a server without users). `exclude` is a
    thread left out (recall leaves out the thread it recalls for)."""

    thread_id: str | None = None
    user_id: str | None = None
    exclude: str | None = None
    # Recall's scope: only `user_id`'s private threads (no other member, not a phone call,
    # whose threads all share the telephony user) and notes, so nothing reaches another person.
    private: bool = False


@dataclass
class Candidate:
    """One message or note a search found, with its rank in each list that found it."""

    key: Key
    text_rank: int | None = None
    vector_rank: int | None = None
    text_score: float | None = None
    similarity: float | None = None
    snippet: str | None = None
    chunk: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


# The threads whose only member is the user (?), phone calls left out.
PRIVATE_THREADS = (
    "SELECT m.thread_id FROM thread_members m JOIN threads t ON t.id = m.thread_id"
    " WHERE m.user_id = ?"
    " AND NOT EXISTS (SELECT 1 FROM thread_members o"
    " WHERE o.thread_id = m.thread_id AND o.user_id != m.user_id)"
    " AND coalesce(json_extract(t.metadata, '$.channel'), '') != 'twilio'"
)


def is_private_thread(db: ReadDB, thread_id: str, user_id: str) -> bool:
    """True when `thread_id` is one of `user_id`'s private threads (recall's condition)."""
    row = db.one(f"SELECT 1 FROM ({PRIVATE_THREADS}) WHERE thread_id = ?", (user_id, thread_id))
    return row is not None


def _owner_filter(scope: Scope, column: str) -> tuple[str, list[Any]]:
    conditions: list[str] = []
    params: list[Any] = []
    if scope.thread_id is not None:
        conditions.append(f"{column} = ?")
        params.append(scope.thread_id)
    elif scope.user_id is not None and scope.private:
        conditions.append(f"({column} IN ({PRIVATE_THREADS}) OR {column} = 'user:' || ?)")
        params += [scope.user_id, scope.user_id]
    elif scope.user_id is not None:
        conditions.append(
            f"{column} IN (SELECT thread_id FROM thread_members WHERE user_id = ?"
            " UNION ALL SELECT 'user:' || ?)"
        )
        params += [scope.user_id, scope.user_id]
    if scope.exclude is not None:
        conditions.append(f"{column} != ?")
        params.append(scope.exclude)
    return "".join(f" AND {c}" for c in conditions), params


def text_candidates(db: ReadDB, match: str, scope: Scope, limit: int) -> list[Candidate]:
    """Messages and notes matching the FTS5 expression `match`, best first (BM25)."""
    where, params = _owner_filter(scope, "m.thread_id")
    # A message waiting in the pending list has nothing in the index yet (search_index.py).
    # Reading the list also ties a watched search to it: it runs again when the index takes in
    # what was waiting.
    rows = db.all(
        "SELECT 'message' AS source, m.id, bm25(message_search) AS rank,"
        " snippet(message_search, 0, '[', ']', '…', 16) AS snippet, m.created_at"
        " FROM message_search JOIN messages m ON m.rowid = message_search.rowid"
        f" WHERE message_search MATCH ?{where}"
        f" AND m.rowid NOT IN (SELECT rowid FROM {PENDING_TABLE})"
        " ORDER BY rank, m.created_at DESC LIMIT ?",
        [match, *params, limit],
    )
    where, params = _owner_filter(scope, "coalesce(n.thread_id, 'user:' || n.user_id)")
    rows += db.all(
        "SELECT 'note' AS source, n.id, bm25(note_search) AS rank,"
        " snippet(note_search, 0, '[', ']', '…', 16) AS snippet, n.created_at"
        " FROM note_search JOIN memory_notes n ON n.rowid = note_search.rowid"
        f" WHERE note_search MATCH ?{where}"
        " ORDER BY rank, n.created_at DESC LIMIT ?",
        [match, *params, limit],
    )
    rows.sort(key=lambda row: (row["rank"], -row["created_at"]))
    return [
        Candidate(
            (row["source"], row["id"]), text_rank=i, text_score=-row["rank"], snippet=row["snippet"]
        )
        for i, row in enumerate(rows[:limit], start=1)
    ]


def vector_candidates(
    db: ReadDB, vector: Sequence[float], scope: Scope, limit: int
) -> list[Candidate]:
    """Messages and notes whose chunks are nearest to `vector`, best first (one per source)."""
    if not has_vector_table(db):
        return []
    where, params = _owner_filter(scope, "v.owner")
    # More chunks than sources are asked for: a long message may hold several of the nearest.
    rows = db.all(
        "SELECT c.message_id, c.note_id, c.text, v.distance"
        f" FROM (SELECT rowid, distance FROM {VECTOR_TABLE} v"
        f" WHERE v.embedding MATCH ? AND k = ?{where}) v"
        " JOIN memory_chunks c ON c.id = v.rowid ORDER BY v.distance",
        [vector_blob(vector), limit * 2, *params],
    )
    found: dict[Key, Candidate] = {}
    for row in rows:
        key: Key = ("message", row["message_id"]) if row["message_id"] else ("note", row["note_id"])
        if key not in found:
            found[key] = Candidate(
                key,
                vector_rank=len(found) + 1,
                similarity=1.0 - float(row["distance"]),
                chunk=row["text"],
            )
    return list(found.values())[:limit]


def fuse(text: list[Candidate], vector: list[Candidate]) -> list[tuple[Candidate, float]]:
    """Reciprocal rank fusion of the two lists: each candidate once, with its hybrid score."""
    merged: dict[Key, Candidate] = {c.key: c for c in vector}
    for candidate in text:
        seen = merged.get(candidate.key)
        if seen is None:
            merged[candidate.key] = candidate
        else:
            seen.text_rank, seen.text_score = candidate.text_rank, candidate.text_score
            seen.snippet = candidate.snippet
    best = 2.0 / (RRF_K + 1)
    scored = []
    for candidate in merged.values():
        total = sum(
            1.0 / (RRF_K + rank)
            for rank in (candidate.text_rank, candidate.vector_rank)
            if rank is not None
        )
        scored.append((candidate, total / best))
    scored.sort(key=lambda item: -item[1])
    return scored


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1].rstrip() + "…"


def hydrate(db: ReadDB, scored: list[tuple[Candidate, float]]) -> list[dict[str, Any]]:
    """The hits as the API shows them: a message row (or a note) with `source`, `snippet`
    (matched words in [ and ], or the nearest chunk's start) and `score`."""
    hits = []
    for candidate, score in scored:
        source, source_id = candidate.key
        if source == "message":
            row = db.one(f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = ?", (source_id,))
            if row is None:
                continue
            hit = message_from_row(db, row)
        else:
            note = db.one(
                "SELECT id, thread_id, user_id, text, created_at FROM memory_notes WHERE id = ?",
                (source_id,),
            )
            if note is None:
                continue
            hit = {
                "id": note["id"],
                "threadId": note["thread_id"],
                "userId": note["user_id"],
                "text": note["text"],
                "createdAt": note["created_at"],
            }
        hit["source"] = source
        hit["snippet"] = candidate.snippet or _short(candidate.chunk or hit["text"])
        hit["score"] = round(score, 6)
        hits.append(hit)
    return hits
