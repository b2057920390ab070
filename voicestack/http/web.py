"""The bundled browser page: `/` and its static files under `/web/{file}` (no build step).

Files are read from the installed package (`voicestack/web/`), so the page ships in wheels and
editable installs alike. Only plain names of files that exist in that folder, with a known
extension, are served: a path can never leave the folder. The page and its files hold no data,
so they are public; the page sends the token from its own URL with every API call.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from importlib.resources.abc import Traversable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from voicestack.echo import echoed
from voicestack.http.errors import ApiError

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
}

# What the page needs and nothing more: scripts, styles, images and media from this server
# only; audio may also play from blob: URLs (speech fetched with the token, then handed to
# <audio>). Its forms are sent by script, never by the browser (which would put their text in
# a URL). The other security headers come from http/headers.py, on every response.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self';"
    " media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none';"
    " frame-ancestors 'none'; form-action 'none'"
)

_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,100}")


def web_folder() -> Traversable:
    """The folder of the bundled page inside the installed package."""
    return resources.files("voicestack") / "web"


def _static(name: str, extra_headers: dict[str, str] | None = None) -> Response:
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    content_type = CONTENT_TYPES.get(suffix)
    file = web_folder() / name
    if not _NAME.fullmatch(name) or content_type is None or not file.is_file():
        raise ApiError(404, "not_found", f"No file of the page is named {echoed(name)!r}.")
    body = file.read_bytes()
    headers = {
        # Revalidate every time: a new release must never run an old app.js from the cache.
        "cache-control": "no-cache",
        "etag": f'"{hashlib.sha256(body).hexdigest()[:32]}"',
        **(extra_headers or {}),
    }
    return Response(body, media_type=content_type, headers=headers)


def _maybe_not_modified(request: Request, response: Response) -> Response:
    if request.headers.get("if-none-match") == response.headers["etag"]:
        headers = {k: v for k, v in response.headers.items() if k != "content-length"}
        return Response(status_code=304, headers=headers)
    return response


async def page(request: Request) -> Response:
    """GET /: the browser page (it reads `?token=` and `#thread` from its own URL)."""
    headers = {"content-security-policy": PAGE_POLICY}
    return _maybe_not_modified(request, _static("index.html", headers))


async def static_file(request: Request) -> Response:
    """GET /web/{file}: one of the page's static files, with its content type."""
    return _maybe_not_modified(request, _static(request.path_params["file"]))


routes = [
    Route("/", page, methods=["GET"]),
    Route("/web/{file}", static_file, methods=["GET"]),
]
