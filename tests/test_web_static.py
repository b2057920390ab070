"""Serving the browser page: `/`, `/web/{file}` with content types, and nothing outside the folder.

Also checks the page itself: everything it loads is served by voicestack (no CDN), and it has no
inline script, inline event handler or inline style, so a strict Content-Security-Policy holds.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.support.api import error_of
from tests.support.server import ServerProcess
from tests.support.web_server import web_server
from voicestack.http.web import PAGE_POLICY, web_folder

FILES = sorted(p.name for p in web_folder().iterdir() if p.is_file())
TYPES = {
    "html": "text/html; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "svg": "image/svg+xml",
}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with web_server(tmp_path_factory.mktemp("web-static"), None) as server:
        yield server


@pytest.fixture
def http(site: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.url, timeout=10) as client:
        yield client


def test_the_page_is_served_at_the_root(http: httpx.Client) -> None:
    response = http.get("/", params={"token": "abc"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == PAGE_POLICY
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.text == (web_folder() / "index.html").read_text()


@pytest.mark.parametrize("name", FILES)
def test_every_file_of_the_page_has_its_content_type(http: httpx.Client, name: str) -> None:
    response = http.get(f"/web/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == TYPES[name.rsplit(".", 1)[1]]
    assert response.headers["cache-control"] == "no-cache"
    assert response.content == (web_folder() / name).read_bytes()
    again = http.get(f"/web/{name}", headers={"if-none-match": response.headers["etag"]})
    assert (again.status_code, again.content) == (304, b"")
    head = http.head(f"/web/{name}")
    assert (head.status_code, head.content) == (200, b"")


@pytest.mark.parametrize(
    "path",
    [
        "/web/nope.js",
        "/web/..%2Fhttp%2Fweb.py",
        "/web/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/web/..%5c__init__.py",
        "/web/.hidden.js",
        "/web/app.js%00.css",
        "/web/%2e%2e",
        "/web/",
        "/web/index",
    ],
)
def test_nothing_outside_the_folder_is_served(http: httpx.Client, path: str) -> None:
    response = http.get(httpx.URL(f"{http.base_url}".rstrip("/") + path))
    error_of(response, 404, "not_found")


def test_a_file_of_another_kind_is_not_served(http: httpx.Client) -> None:
    # The package folder holds only the page, but a stray file of an unknown kind stays private.
    error_of(http.get("/web/py.typed"), 404, "not_found")


def test_everything_the_page_loads_ships_with_it() -> None:
    html = (web_folder() / "index.html").read_text()
    wanted = set(re.findall(r'(?:src|href)="/web/([^"]+)"', html))
    for name in FILES:
        if name.endswith(".js"):
            source = (web_folder() / name).read_text()
            wanted |= set(re.findall(r'from "\./([^"]+)"', source))
            wanted |= set(re.findall(r'import\("/web/([^"]+)"\)', source))
    assert wanted <= set(FILES), wanted - set(FILES)
    assert {"app.js", "style.css", "icon.svg", "voicestack.js"} <= wanted


def test_the_page_needs_no_other_site_and_no_inline_code() -> None:
    for name in FILES:
        text = (web_folder() / name).read_text()
        if name != "icon.svg":  # its xmlns names a namespace, it loads nothing
            assert "://" not in text, name
    html = (web_folder() / "index.html").read_text()
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert scripts == ['<script type="module" src="/web/app.js">']
    assert re.search(r"\son[a-z]+=", html) is None  # no inline event handlers
    assert re.search(r"\sstyle=", html) is None  # no inline styles
