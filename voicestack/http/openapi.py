"""GET /openapi.json: an OpenAPI 3.1 document generated from the routes and loaded functions.

Nothing here repeats what the code already says: paths and methods come from the Starlette
routes, summaries from the handlers' docstrings, schemas from pydantic models, and the function
routes become one path per registered function, with its argument model as the body. What code
cannot say (which model a handler answers with, which refusals it may send) is the OPERATIONS
table of voicestack.http.schemas; a test fails when a route is missing from it.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterator
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from voicestack import __version__, jsoncodec
from voicestack.config import Settings
from voicestack.functions.registry import Kind, Registry, ServerFunction
from voicestack.http.auth import accepts_query_token, is_public
from voicestack.http.limits import RequestLimits
from voicestack.http.schemas import (
    EVENT_STREAM,
    FUNCTION_ERRORS,
    FUNCTION_ROUTES,
    JSON,
    OPERATIONS,
    REFUSALS,
    ErrorBody,
    Operation,
    StreamEvent,
)

REF = "#/components/schemas/"
Handler = Callable[..., Any]
Limited = Callable[[str, str], bool]


class Components:
    """The document's `components/schemas`: every model once, under a name no other model has."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def schema(self, tp: Any, mode: Literal["validation", "serialization"]) -> dict[str, Any]:
        """A JSON schema of `tp`; models in it are put in the components and referenced."""
        for prefix in _prefixes(tp, mode):
            generated = TypeAdapter(tp).json_schema(
                mode=mode, ref_template=REF + prefix + "{model}"
            )
            defs = {prefix + name: value for name, value in generated.pop("$defs", {}).items()}
            top: dict[str, Any] = {}
            if inspect.isclass(tp) and issubclass(tp, BaseModel) and "$ref" not in generated:
                top = {prefix + tp.__name__: generated}  # (a recursive model is in `defs`)
            if all(self.schemas.get(n, s) == s for n, s in {**defs, **top}.items()):
                self.schemas.update(defs)
                self.schemas.update(top)
                return {"$ref": REF + next(iter(top))} if top else generated
        raise ValueError(f"Two different models are both named after {tp!r}.")


def _prefixes(tp: Any, mode: str) -> Iterator[str]:
    yield ""
    module = getattr(tp, "__module__", "") or "types"
    yield f"{module}."
    yield f"{module}.{mode}."


def _docstring(handler: Handler) -> tuple[str, str]:
    doc = inspect.getdoc(handler) or ""
    first, _, rest = doc.partition("\n")
    head, sep, tail = first.partition(": ")
    summary = (tail if sep and head.split(" ", 1)[0] in {"GET", "POST"} else first).strip()
    return summary[:1].upper() + summary[1:], rest.strip()


def _error_responses(statuses: tuple[int, ...], public: bool, limited: bool) -> dict[str, Any]:
    codes = sorted({*statuses, *(() if public else (401,)), *((429,) if limited else ())})
    return {
        str(code): {
            "description": REFUSALS.get(code, "A refusal."),
            "content": {JSON: {"schema": {"$ref": REF + "ErrorBody"}}},
        }
        for code in codes
    }


def _path_schema(convertor: Any) -> dict[str, Any]:
    kind = type(convertor).__name__
    return {"type": "integer"} if kind == "IntegerConvertor" else {"type": "string"}


def _security(method: str, path: str) -> list[dict[str, list[str]]]:
    if is_public(path):
        return []
    if accepts_query_token(method, path):
        return [{"bearer": []}, {"queryToken": []}]
    return [{"bearer": []}]


def _value_schema(function: ServerFunction) -> dict[str, Any]:
    """The schema of the function's return annotation; any value when it has none."""
    try:
        hint = typing.get_type_hints(function.fn).get("return")
        if hint is None or hint is Any:
            return {}
        return TypeAdapter(hint).json_schema(mode="serialization")
    except Exception:  # an annotation that does not resolve, or no JSON schema can express
        return {}


class _Builder:
    """Builds the operations of one document, sharing its components."""

    def __init__(self, registry: Registry, limited: Limited) -> None:
        self.registry = registry
        self.limited = limited
        self.components = Components()
        self.components.schema(ErrorBody, "serialization")

    def functions(self, kind: Kind) -> list[ServerFunction]:
        """The registered functions of `kind`, by name."""
        return sorted(
            (f for f in self.registry.functions.values() if f.kind == kind), key=lambda f: f.name
        )

    def parameters(self, route: Route, op: Operation) -> list[dict[str, Any]]:
        """The path, query and header parameters of `route`."""
        params: list[dict[str, Any]] = []
        for name, convertor in route.param_convertors.items():
            schema = _path_schema(convertor)
            if name == "name" and op.names_of is not None:
                schema["enum"] = [f.name for f in self.functions(op.names_of)]
            params.append({"name": name, "in": "path", "required": True, "schema": schema})
        for param in op.params:
            schema = self.components.schema(param.schema, "validation")
            entry: dict[str, Any] = {
                "name": param.name,
                "in": param.where,
                "required": param.required,
            }
            entry.update(
                {"content": {JSON: {"schema": schema}}} if param.json else {"schema": schema}
            )
            if param.description:
                entry["description"] = param.description
            params.append(entry)
        if op.query_model is not None:
            model_schema = op.query_model.model_json_schema(mode="validation")
            for name, schema in model_schema.get("properties", {}).items():
                params.append({"name": name, "in": "query", "required": False, "schema": schema})
        return params

    def content(self, op: Operation) -> dict[str, Any]:
        """The success answer's content, by media type."""
        if op.answer is not None:
            return {JSON: {"schema": self.components.schema(op.answer, "serialization")}}
        if op.media == (EVENT_STREAM,):
            return {EVENT_STREAM: {"schema": self.components.schema(StreamEvent, "validation")}}
        return {media: {"schema": {"type": "string", "format": "binary"}} for media in op.media}

    def operation(self, method: str, route: Route) -> dict[str, Any]:
        """The operation object of `method` on `route`."""
        path = route.path_format
        op = OPERATIONS.get((method, path), Operation())
        summary, description = _docstring(route.endpoint)
        content = self.content(op)
        responses: dict[str, Any] = {str(op.status): {"description": summary, "content": content}}
        for status in op.extra_answers:
            answer: dict[str, Any] = {"description": summary}
            if status != 304:
                answer["content"] = content
            responses[str(status)] = answer
        limited = self.limited(method, path)
        responses.update(_error_responses(op.errors, is_public(path), limited))
        doc: dict[str, Any] = {
            "operationId": f"{method.lower()}_{route.endpoint.__name__}",
            "summary": summary,
            "tags": [route.endpoint.__module__.rsplit(".", 1)[-1]],
            "security": _security(method, path),
            "responses": responses,
        }
        if description:
            doc["description"] = description
        parameters = self.parameters(route, op)
        if parameters:
            doc["parameters"] = parameters
        body: dict[str, Any] = {}
        if op.body is not None:
            body[JSON] = {"schema": self.components.schema(op.body, "validation")}
        if op.form is not None:
            body["multipart/form-data"] = {"schema": self.components.schema(op.form, "validation")}
        if body:
            doc["requestBody"] = {"required": op.form is not None, "content": body}
        return doc

    def function_operation(self, function: ServerFunction) -> tuple[str, dict[str, Any]]:
        """The path of one function and its POST operation: `{"args"}` in, its value out."""
        path = f"/api/{function.kind}/{function.name}"
        args = self.components.schema(function.args_model, "validation")
        body = {"type": "object", "properties": {"args": args}, "additionalProperties": False}
        answer = {
            "type": "object",
            "required": ["value", "version"],
            "properties": {
                "value": _value_schema(function),
                "version": {"type": "integer", "minimum": 0},
            },
        }
        committed = " (after commit)." if function.kind == "mutation" else "."
        doc = {
            "operationId": f"{function.kind}:{function.name}",
            "summary": function.description or f"The {function.kind} {function.name}.",
            "tags": [function.app or "voicestack"],
            "security": [{"bearer": []}],
            "requestBody": {"required": False, "content": {JSON: {"schema": body}}},
            "responses": {
                "200": {
                    "description": "The value and the database version it reflects" + committed,
                    "content": {JSON: {"schema": answer}},
                },
                **_error_responses(FUNCTION_ERRORS, False, self.limited("POST", path)),
                "4XX": {
                    "description": "A refusal of the function itself, with its own code.",
                    "content": {JSON: {"schema": {"$ref": REF + "ErrorBody"}}},
                },
            },
        }
        return path, {"post": doc}

    def paths(self, routes: list[BaseRoute]) -> dict[str, dict[str, Any]]:
        """Every path of `routes`, function routes expanded, sorted."""
        paths: dict[str, dict[str, Any]] = {}
        for route in routes:
            if not isinstance(route, Route):
                continue
            kind = FUNCTION_ROUTES.get(route.path_format)
            if kind is not None:
                paths.update(self.function_operation(f) for f in self.functions(kind))
                continue
            for method in sorted((route.methods or set()) - {"HEAD"}):
                item = paths.setdefault(route.path_format, {})
                item[method.lower()] = self.operation(method, route)
        return dict(sorted(paths.items()))


def limits_of(settings: Settings) -> Limited:
    """Whether the server's per-token limits may refuse a (method, path) with 429."""
    limits = RequestLimits(_no_app, settings)

    def limited(method: str, path: str) -> bool:
        if accepts_query_token(method, path):  # an event stream: limited in number
            return settings.max_streams_per_token > 0
        return bool(limits.rates_of(method, path))

    return limited


async def _no_app(_scope: Scope, _receive: Receive, _send: Send) -> None:
    raise AssertionError("only asked which rates a request spends")


def build_document(
    routes: list[BaseRoute], registry: Registry, limited: Limited = lambda _m, _p: False
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `routes`, function routes expanded over `registry`;
    `limited` says which requests may be refused with 429."""
    builder = _Builder(registry, limited)
    paths = builder.paths(routes)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "voicestack",
            "version": __version__,
            "description": "The HTTP API of a voicestack server (DESIGN §4), generated from "
            "its routes and the functions of the apps it loaded.",
        },
        "paths": paths,
        "components": {
            "schemas": dict(sorted(builder.components.schemas.items())),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "queryToken": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "token",
                    "description": "The token as `?token=`, on event streams only.",
                },
            },
        },
        "security": [{"bearer": []}],
    }


async def openapi_json(request: Request) -> Response:
    """GET /openapi.json: this document, for the apps this server loaded; no authentication."""
    state = request.app.state
    cached = getattr(state, "openapi_document", None)
    if cached is None:
        rt = state.runtime
        document = build_document(request.app.routes, rt.registry, limits_of(rt.settings))
        cached = state.openapi_document = jsoncodec.dumps(document)
    return Response(cached, media_type=JSON)


routes = [Route("/openapi.json", openapi_json, methods=["GET"])]
