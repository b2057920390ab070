"""Email sign-in links (--smtp-url), mailed to a real SMTP server on a loopback port (aiosmtpd):
a link signs in once, a used or expired one is refused with a page that says why, and sign-up
by email keeps to --signin-allowed-domains."""

from __future__ import annotations

import email
import re
import threading
from collections.abc import Iterator
from email.message import Message
from typing import Any

import apsw
import pytest
from aiosmtpd.controller import Controller
from pydantic import ValidationError

from tests.support.api import error_of
from tests.support.oidc_provider import browser, csrf_header
from tests.support.server import TEST_APP, ServerProcess, free_port, running_server
from voicestack.config import Settings

pytestmark = pytest.mark.anyio
MAIL_WAIT_S = 10.0
# Links point at --public-url only (never at a request's Host); the tests open them on the
# server's loopback address.
PUBLIC_URL = "http://voice.invalid"


class Inbox:
    """What the SMTP server received, one parsed mail per message."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.mails: list[Message] = []
        self.recipients: list[list[str]] = []
        self.arrived = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """aiosmtpd's hook for a received message."""
        with self.arrived:
            self.mails.append(email.message_from_bytes(envelope.content))
            self.recipients.append(list(envelope.rcpt_tos))
            self.arrived.notify_all()
        return "250 OK"

    def next_link(self, to: str) -> str:
        """The path of the sign-in link of the next mail to `to` (waits for it); the link
        itself is under PUBLIC_URL."""
        with self.arrived:
            found = self.arrived.wait_for(
                lambda: any(m["To"] == to for m in self.mails), MAIL_WAIT_S
            )
            assert found, f"no mail to {to} arrived"
            mail = next(m for m in self.mails if m["To"] == to)
            self.mails.remove(mail)
        body = mail.get_payload(decode=True).decode()  # type: ignore[union-attr]
        match = re.search(r"http://\S+/auth/email/verify\?token=\S+", body)
        assert match, body
        assert match.group(0).startswith(f"{PUBLIC_URL}/auth/email/verify?token="), body
        return match.group(0).removeprefix(PUBLIC_URL)


@pytest.fixture(scope="module")
def inbox() -> Iterator[Inbox]:
    received = Inbox(free_port())
    controller = Controller(received, hostname="127.0.0.1", port=received.port)
    controller.start()
    try:
        yield received
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def mail_site(inbox: Inbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("signin-email")
    args = ["--smtp-url", f"smtp://127.0.0.1:{inbox.port}"]
    args += ["--signin-allowed-domains", "example.com"]
    args += ["--smtp-from", "voicestack@example.com", "--public-url", PUBLIC_URL]
    with running_server(workdir, TEST_APP, args) as server:
        yield server


async def test_a_link_signs_in_once_and_a_used_one_is_refused(
    mail_site: ServerProcess, inbox: Inbox
) -> None:
    async with browser(mail_site) as http:
        options = (await http.get("/auth/providers")).json()
        assert options == {"providers": [], "email": True}
        asked = await http.post("/auth/email", json={"email": "Cleo@Example.com"})
        assert (asked.status_code, asked.json()) == (202, {"ok": True})
        link = inbox.next_link("cleo@example.com")
        signed_in = await http.get(link)
        assert (signed_in.status_code, signed_in.headers["location"]) == (303, "/")
        me = (await http.get("/api/me")).json()
        cleo = "cleo@example.com"
        assert me == {"id": me["id"], "name": cleo, "email": cleo, "role": "user"}
        created = await http.post("/api/threads", json={}, headers=csrf_header(http))
        assert created.status_code == 201
    async with browser(mail_site) as again:
        used = await again.get(link)
        assert used.status_code == 400
        assert 'data-code="link_used_or_expired"' in used.text
        error_of(await again.get("/api/me"), 401, "unauthorized")
        # A second link signs the same person in: one user per address.
        await again.post("/auth/email", json={"email": "cleo@example.com"})
        assert (await again.get(inbox.next_link("cleo@example.com"))).status_code == 303
        assert (await again.get("/api/me")).json() == me


async def test_an_expired_link_is_refused(mail_site: ServerProcess, inbox: Inbox) -> None:
    async with browser(mail_site) as http:
        await http.post("/auth/email", json={"email": "dan@example.com"})
        link = inbox.next_link("dan@example.com")
        # Fifteen minutes later, as the database sees it.
        db = apsw.Connection(str(mail_site.db_path))
        try:
            db.set_busy_timeout(5000)
            db.execute("UPDATE auth_pending SET expires_at = 0 WHERE key LIKE 'email:%'")
        finally:
            db.close()
        expired = await http.get(link)
        assert expired.status_code == 400
        assert 'data-code="link_used_or_expired"' in expired.text


async def test_sign_up_by_email_keeps_to_the_allowed_domains(
    mail_site: ServerProcess, inbox: Inbox
) -> None:
    async with browser(mail_site) as http:
        # The same answer as for an allowed address, but no mail is sent.
        asked = await http.post("/auth/email", json={"email": "eve@elsewhere.org"})
        assert (asked.status_code, asked.json()) == (202, {"ok": True})
        # Five links to one address in 15 minutes, then no more (each mail is in the inbox by
        # the time its request is answered).
        for _ in range(6):
            await http.post("/auth/email", json={"email": "fay@example.com"})
        assert [m["To"] for m in inbox.mails] == ["fay@example.com"] * 5
        inbox.mails.clear()
        error_of(await http.post("/auth/email", json={"email": "no"}), 422, "invalid_email")


async def test_links_point_at_the_public_url_and_go_to_one_plain_address(
    mail_site: ServerProcess, inbox: Inbox
) -> None:
    async with browser(mail_site) as http:
        # A forged Host header does not move the link off --public-url (next_link checks).
        forged = {"Host": "evil.example"}
        asked = await http.post("/auth/email", json={"email": "gus@example.com"}, headers=forged)
        assert asked.status_code == 202
        assert inbox.next_link("gus@example.com").startswith("/auth/email/verify?token=")
        assert inbox.recipients.pop() == ["gus@example.com"]
        # Address lists, display names and header syntax are not one address.
        for bad in [
            "hal@example.com,eve@elsewhere.org",
            "hal@example.com;eve@elsewhere.org",
            "Hal <hal@example.com>",
            "<eve@elsewhere.org>hal@example.com",
            '"eve@elsewhere.org"@example.com',
            "hal@example.com (eve@elsewhere.org)",
        ]:
            refused = await http.post("/auth/email", json={"email": bad})
            error_of(refused, 422, "invalid_email")
    assert inbox.mails == []


def test_email_links_need_a_public_url() -> None:
    with pytest.raises(ValidationError, match="--smtp-url needs --public-url"):
        Settings(smtp_url="smtp://127.0.0.1:25")
    assert Settings(smtp_url="smtp://127.0.0.1:25", public_url=PUBLIC_URL).smtp_url is not None
