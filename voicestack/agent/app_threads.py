"""`ctx.threads` in server functions (DESIGN §8): the built-in thread functions, called from app
code as the caller.

A mutation's calls run the same code as `threads.create`, `messages.send` and `messages.post`
inside the mutation's own transaction, so a mutation that fails leaves no thread, message or
reply behind: the reply runner only ever sees committed pending replies. An action's calls each
commit on their own, and `generate` waits for the reply to end (ReplyEnds).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError

from voicestack.agent.membership import require_thread
from voicestack.agent.reply_ends import EndedReply, ReplyEnds
from voicestack.agent.thread_args import CreateThreadArgs, SendArgs
from voicestack.agent.threads import insert_thread, post_message, send_message, thread_messages
from voicestack.functions.context import MutationCtx
from voicestack.functions.errors import FunctionError
from voicestack.identity import Caller
from voicestack.scheduler.context import Write
from voicestack.store.db import ReadDB, WriteDB

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

POST_ROLES = ("assistant", "user", "system")


class Read(Protocol):
    """Runs `fn(db)` in a read snapshot of its own; resolves to what `fn` returned."""

    def __call__(self, fn: Callable[[ReadDB], T], /) -> Awaitable[T]: ...


def _args(model: type[M], call: str, **values: Any) -> M:
    """The call's arguments checked as the HTTP API checks them; `invalid_args` otherwise."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise FunctionError("invalid_args", f"{call}: {where}: {error['msg']}.", 422) from None


def _check_limit(limit: int | None) -> None:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        message = f"ctx.threads.messages: limit must be a positive int, not {limit!r}."
        raise FunctionError("invalid_args", message, 422)


class ThreadsInQuery:
    """A query's `ctx.threads`: reads in its snapshot, as its caller."""

    def __init__(self, db: ReadDB | WriteDB, user: Caller | None) -> None:
        self._db = db
        self._user = user

    def messages(self, thread_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The thread's newest `limit` messages (all when None), in order."""
        _check_limit(limit)
        require_thread(self._db, thread_id, self._user)
        return thread_messages(self._db, thread_id, limit)


class ThreadsInMutation(ThreadsInQuery):
    """A mutation's `ctx.threads`: writes in its transaction, as its caller."""

    def __init__(self, db: WriteDB, user: Caller | None) -> None:
        super().__init__(db, user)
        self._write_db = db

    def create(self, title: str | None = None, agent: str | None = None) -> str:
        """Create a thread owned by the caller, answered by `agent`; returns its id."""
        args = _args(CreateThreadArgs, "ctx.threads.create", title=title, agent=agent)
        return insert_thread(self._write_db, self._user, title=args.title, agent=args.agent)

    def send(self, thread_id: str, text: str) -> dict[str, str]:
        """Save the caller's message and queue its reply; `{"messageId", "replyId"}`."""
        args = _args(SendArgs, "ctx.threads.send", threadId=thread_id, text=text)
        result: dict[str, str] = send_message(MutationCtx(self._write_db, self._user), args)
        return result

    def post(self, thread_id: str, text: str, role: str = "assistant") -> str:
        """Save a finished message that starts no reply; returns its id."""
        if role not in POST_ROLES:
            raise FunctionError(
                "invalid_args",
                f"ctx.threads.post: role must be one of {', '.join(POST_ROLES)}, not {role!r}.",
                422,
            )
        args = _args(SendArgs, "ctx.threads.post", threadId=thread_id, text=text)
        require_thread(self._write_db, args.thread_id, self._user)
        author = self._user.id if self._user else None
        return post_message(self._write_db, args.thread_id, args.text, author, role)


class ThreadsInAction:
    """An action's `ctx.threads`: each write commits on its own, as the action's caller."""

    def __init__(self, write: Write, read: Read, ends: ReplyEnds, user: Caller | None) -> None:
        self._write = write
        self._read = read
        self._ends = ends
        self._user = user

    async def create(self, title: str | None = None, agent: str | None = None) -> str:
        """Create a thread owned by the caller, answered by `agent`; returns its id."""
        thread_id: str = await self._write(lambda db: self._in(db).create(title, agent))
        return thread_id

    async def send(self, thread_id: str, text: str) -> dict[str, str]:
        """Save the caller's message and start its reply; `{"messageId", "replyId"}`."""
        ids: dict[str, str] = await self._write(lambda db: self._in(db).send(thread_id, text))
        return ids

    async def post(self, thread_id: str, text: str, role: str = "assistant") -> str:
        """Save a finished message that starts no reply; returns its id."""
        message_id: str = await self._write(lambda db: self._in(db).post(thread_id, text, role))
        return message_id

    async def messages(self, thread_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The thread's newest `limit` messages (all when None), in order."""
        rows: list[dict[str, Any]] = await self._read(
            lambda db: ThreadsInQuery(db, self._user).messages(thread_id, limit)
        )
        return rows

    async def generate(self, thread_id: str, text: str) -> str:
        """Send `text`, wait for the reply to end and return its text; a reply that failed or
        was interrupted raises its error as a FunctionError (502 failed, 409 interrupted)."""
        ids = await self.send(thread_id, text)
        return reply_text(await self._ends.wait(ids["replyId"]))

    def _in(self, db: WriteDB) -> ThreadsInMutation:
        return ThreadsInMutation(db, self._user)


def reply_text(reply: EndedReply) -> str:
    """The text of a complete reply; the error of any other, as a FunctionError."""
    if reply.status == "complete":
        return reply.text
    code = reply.error_code or f"reply_{reply.status}"
    message = reply.error_message or f"The reply ended {reply.status}."
    raise FunctionError(code, message, 502 if reply.status == "failed" else 409)
