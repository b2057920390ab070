"""What each route of DESIGN §4 takes and answers, for the OpenAPI document: pydantic models
of the REST bodies and answers, and OPERATIONS, the table of what each route's code cannot say.

Function calls carry their own argument models (voicestack.functions.registry); these models
describe what the routes around them send and take. Rows allow keys beyond the documented ones:
the contract is additive, so a client must ignore keys it does not know.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from voicestack.agent.thread_args import MAX_TEXT, CreateThreadArgs, ListThreadsArgs
from voicestack.functions.registry import Kind
from voicestack.http import web
from voicestack.http.signin_schemas import Done, EmailLinkBody, Me, SignInOptions
from voicestack.http.voice_body import VoiceFields
from voicestack.http.watch import MAX_WATCHES_PER_STREAM, WatchItem

JSON = "application/json"
EVENT_STREAM = "text/event-stream"


class _Row(BaseModel):
    model_config = ConfigDict(extra="allow")


class FieldError(BaseModel):
    """One invalid argument: its dotted path and what is wrong with it."""

    field: str
    message: str


class ErrorDetail(_Row):
    """The `error` of an error answer: a snake_case code and a sentence saying what to do."""

    code: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    message: str
    fields: list[FieldError] | None = None


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: `{"error": {"code", "message"}}`."""

    error: ErrorDetail


class Health(BaseModel):
    """GET /healthz."""

    ok: bool
    version: str
    details: dict[str, Any] | None = Field(
        None,
        description=(
            "With ?details=1: the state of memory (hybrid or full-text only), and the thread"
            " streams edges share on this process (`sharedFeeds`: streams, members)."
        ),
    )


class FunctionInfo(_Row):
    """One entry of GET /api/functions."""

    name: str
    kind: Literal["query", "mutation", "action"]
    description: str
    app: str
    args: dict[str, Any] = Field(description="The JSON schema of the function's arguments.")


class CallAnswer(BaseModel):
    """A function's value and the database version it reflects."""

    value: Any
    version: int = Field(ge=0)


class Created(_Row):
    """A new row's id."""

    id: str


class MessageBody(BaseModel):
    """POST /api/threads/{id}/messages."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=MAX_TEXT)


class Turn(_Row):
    """A saved user message and the reply it started."""

    message_id: str = Field(alias="messageId")
    reply_id: str = Field(alias="replyId")


class Cancelled(_Row):
    """The reply a cancel stopped, or null when none was running."""

    message_id: str | None = Field(alias="messageId")


class Thread(_Row):
    """A thread row."""

    id: str
    title: str | None
    owner: str | None
    agent: str = Field(description="The agent that answers the thread now.")
    metadata: dict[str, Any] | None = Field(
        None,
        description="Where the thread came from: a phone call's `channel` (twilio), `callSid`,"
        " `from` and `to`; null for threads made through the API.",
    )
    created_at: float = Field(alias="createdAt")
    updated_at: float = Field(alias="updatedAt")


class Message(_Row):
    """A message row."""

    id: str
    thread_id: str = Field(alias="threadId")
    role: Literal["user", "assistant", "tool", "system"]
    text: str
    status: Literal["pending", "streaming", "complete", "failed", "interrupted"]
    error: ErrorDetail | None
    created_at: float = Field(alias="createdAt")
    order: int
    usage: dict[str, Any]
    agent: str | None = Field(description="The agent that wrote it; null for a person's.")


class ToolCall(_Row):
    """A tool-call row."""

    id: str
    thread_id: str = Field(alias="threadId")
    message_id: str = Field(alias="messageId")
    name: str
    args: Any
    status: Literal["pending", "awaiting_approval", "running", "done", "failed"]
    progress: Any
    result: Any
    error: str | None


class ThreadDetail(Thread):
    """GET /api/threads/{id}: the thread with its usage, messages and tool calls."""

    usage: dict[str, Any]
    messages: list[Message]
    tool_calls: list[ToolCall] = Field(alias="toolCalls")


class ToolInfo(_Row):
    """One entry of GET /api/tools: a loaded tool, or a plugin that failed to load."""

    name: str
    description: str
    schema_: dict[str, Any] | None = Field(alias="schema")
    plugin: str
    status: str
    error: str | None


class AgentInfo(_Row):
    """One entry of GET /api/agents."""

    name: str
    description: str
    model: str
    tools: list[str] | None = Field(description="The tools it may call; null: every tool.")
    voice: str
    handoffs: list[str] = Field(description="The agents it may transfer a thread to.")


class VoiceForm(BaseModel):
    """POST /voice as multipart/form-data."""

    audio: bytes = Field(json_schema_extra={"format": "binary", "contentMediaType": "audio/*"})
    thread_id: str = Field(alias="threadId", min_length=1, max_length=100)
    speak: bool = False
    language: str | None = Field(None, min_length=2, max_length=35)


class VoiceAnswer(_Row):
    """POST /voice: what was heard, the message saved and the reply started."""

    transcript: str
    message_id: str = Field(alias="messageId")
    reply_id: str = Field(alias="replyId")
    file_id: str = Field(alias="fileId")


class StreamEvent(_Row):
    """One Server-Sent Event of a stream; `data` is JSON text. Watches send `value` and
    `error`; a thread feed `message`, `delta`, `tool_call`, `speech` and `ready`."""

    event: str
    id: str | None = None
    data: str = Field(json_schema_extra={"contentMediaType": "application/json"})


@dataclass(frozen=True)
class Param:
    """A query or header parameter; `json` ones carry a JSON text (`?args={...}`)."""

    name: str
    where: Literal["query", "header"]
    schema: Any
    json: bool = False
    required: bool = False
    description: str = ""


@dataclass(frozen=True)
class Operation:
    """What a route's code cannot say by itself: its body, its answer and its refusals."""

    answer: Any = None  # the JSON answer's type; None with `media`: not JSON
    status: int = 200
    body: Any = None  # the JSON body's type
    form: type[BaseModel] | None = None  # a multipart/form-data body
    errors: tuple[int, ...] = ()
    media: tuple[str, ...] = (JSON,)
    params: tuple[Param, ...] = ()
    query_model: type[BaseModel] | None = None  # query parameters, one per field
    names_of: Kind | None = None  # the `{name}` path parameter: a function of this kind
    extra_answers: tuple[int, ...] = ()  # more success statuses, same media


_LAST_EVENT = (
    Param("Last-Event-ID", "header", str, description="Resume after this event id."),
    Param(
        "lastEventId", "query", str, description="Last-Event-ID, for clients that cannot set it."
    ),
)
_BODY_ERRORS = (400, 413, 422)

# (method, path) of each route -> what its code does not say.
OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/healthz"): Operation(answer=Health),
    ("GET", "/openapi.json"): Operation(answer=dict[str, Any]),
    ("GET", "/api/functions"): Operation(answer=list[FunctionInfo]),
    ("GET", "/api/watch"): Operation(
        media=(EVENT_STREAM,),
        errors=(400, 404, 413, 414, 422),
        params=(
            Param(
                "q",
                "query",
                Annotated[list[WatchItem], Field(min_length=1, max_length=MAX_WATCHES_PER_STREAM)],
                json=True,
                required=True,
                description=f"1 to {MAX_WATCHES_PER_STREAM} subscriptions.",
            ),
            *_LAST_EVENT,
        ),
    ),
    ("GET", "/api/watch/{name}"): Operation(
        media=(EVENT_STREAM,),
        errors=(400, 404, 413, 414, 422),
        params=(Param("args", "query", dict[str, Any], json=True), *_LAST_EVENT),
        names_of="query",
    ),
    ("GET", "/api/threads"): Operation(
        answer=list[Thread], errors=(404, 422), query_model=ListThreadsArgs
    ),
    ("POST", "/api/threads"): Operation(
        answer=Created, status=201, body=CreateThreadArgs, errors=_BODY_ERRORS
    ),
    ("GET", "/api/threads/{thread_id}"): Operation(answer=ThreadDetail, errors=(404, 422)),
    ("POST", "/api/threads/{thread_id}/messages"): Operation(
        answer=Turn, status=201, body=MessageBody, errors=(*_BODY_ERRORS, 404, 409)
    ),
    ("POST", "/api/threads/{thread_id}/cancel"): Operation(answer=Cancelled, errors=(404, 422)),
    ("GET", "/api/threads/{thread_id}/events"): Operation(
        media=(EVENT_STREAM,),
        errors=(404, 422),
        params=(
            Param("since", "query", int, description="Resume after this cursor."),
            *_LAST_EVENT,
        ),
    ),
    ("GET", "/api/tools"): Operation(answer=list[ToolInfo]),
    ("GET", "/api/agents"): Operation(answer=list[AgentInfo]),
    ("POST", "/voice"): Operation(
        answer=VoiceAnswer,
        status=201,
        body=VoiceFields,
        form=VoiceForm,
        errors=(400, 404, 413, 415, 422, 502),
    ),
    ("GET", "/api/files/{file_id}"): Operation(
        media=("audio/*",),
        extra_answers=(206,),
        errors=(404, 416, 422),
        params=(Param("Range", "header", str, description="One byte range: bytes=FIRST-LAST."),),
    ),
    ("GET", "/"): Operation(
        media=(web.CONTENT_TYPES[".html"],), extra_answers=(304,), errors=(404,)
    ),
    ("POST", "/twilio/voice"): Operation(
        media=("text/xml",),
        errors=(403, 404, 413, 422),
        params=(
            Param(
                "X-Twilio-Signature",
                "header",
                str,
                required=True,
                description="Twilio's HMAC-SHA1 of --public-url + path and the sorted form fields.",
            ),
        ),
    ),
    ("GET", "/web/{file}"): Operation(
        media=tuple(sorted(set(web.CONTENT_TYPES.values()))), extra_answers=(304,), errors=(404,)
    ),
    ("GET", "/api/me"): Operation(answer=Me),
    ("GET", "/auth/providers"): Operation(answer=SignInOptions),
    ("POST", "/auth/logout"): Operation(answer=Done, errors=(403,)),
    # Browser navigations: a redirect, or an HTML page (not JSON) saying why the sign-in was
    # refused.
    ("GET", "/auth/login/{provider}"): Operation(
        media=(web.CONTENT_TYPES[".html"],), status=302, extra_answers=(404, 502)
    ),
    ("GET", "/auth/callback/{provider}"): Operation(
        media=(web.CONTENT_TYPES[".html"],), status=303, extra_answers=(400, 403, 404, 502)
    ),
    ("POST", "/auth/email"): Operation(
        answer=Done, status=202, body=EmailLinkBody, errors=(*_BODY_ERRORS, 404, 502)
    ),
    ("GET", "/auth/email/verify"): Operation(
        media=(web.CONTENT_TYPES[".html"],),
        status=303,
        extra_answers=(400, 403),
        params=(Param("token", "query", str, description="The token of the emailed link."),),
    ),
}

# The function routes, documented as one path per registered function of their kind.
FUNCTION_ROUTES: dict[str, Kind] = {
    "/api/query/{name}": "query",
    "/api/mutation/{name}": "mutation",
    "/api/action/{name}": "action",
}

FUNCTION_ERRORS = (400, 404, 413, 422)


REFUSALS = {
    400: "The request is malformed (bad JSON, a wrong kind of function, a bad form).",
    401: "No token, or one that is unknown or revoked.",
    403: "Refused: a bad signature, a write signed in by cookie without X-CSRF-Token, or a"
    " sign-in this server refuses.",
    404: "Nothing by that name or id is visible to the caller.",
    409: "The request conflicts with the current state.",
    413: "The body is over the server's size limit.",
    414: "The URL is over the HTTP parser's 65,535 bytes (long `?args=` or `?q=`).",
    415: "The body is not in a format this route takes.",
    416: "The byte range is outside the file.",
    422: "The arguments do not fit their schema (`error.fields` says which).",
    429: "Over a per-token limit: retry after `Retry-After` seconds.",
    502: "The model provider failed.",
}
