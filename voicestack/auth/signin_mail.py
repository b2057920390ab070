"""Email sign-in links: a one-time token kept as its hash for 15 minutes, and the mail that
carries it, sent through the SMTP server of `--smtp-url`."""

from __future__ import annotations

import hashlib
import json
import secrets
import smtplib
import ssl
import time
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

from voicestack.auth.signin_pending import put_pending, take_pending
from voicestack.store.db import WriteDB

LINK_TTL_S = 15 * 60
# Links one address may be sent per 15 minutes: enough for a lost mail, too few to flood a box.
LINKS_PER_ADDRESS = 5
SMTP_TIMEOUT_S = 20.0


def _key(token: str) -> str:
    return "email:" + hashlib.sha256(token.encode()).hexdigest()


def new_email_link(db: WriteDB, email: str) -> str:
    """A one-time sign-in token for `email`, valid 15 minutes (the database keeps its hash)."""
    token = secrets.token_urlsafe(32)
    put_pending(db, _key(token), json.dumps({"email": email}), LINK_TTL_S)
    return token


def may_send_link(db: WriteDB, email: str) -> bool:
    """Count a link to `email`: False once it was sent LINKS_PER_ADDRESS in 15 minutes."""
    key = "email-sent:" + hashlib.sha256(email.encode()).hexdigest()
    row = db.one(
        "SELECT data FROM auth_pending WHERE key = ? AND expires_at > ?", (key, time.time())
    )
    if row is None:
        put_pending(db, key, "1", LINK_TTL_S)
        return True
    sent = int(row["data"])
    if sent >= LINKS_PER_ADDRESS:
        return False
    db.execute("UPDATE auth_pending SET data = ? WHERE key = ?", (str(sent + 1), key))
    return True


def use_email_link(db: WriteDB, token: str) -> str | None:
    """The email a link's token was sent to, spending the token; None when it is unknown,
    used already or expired."""
    if not 20 <= len(token) <= 100:
        return None
    data = take_pending(db, _key(token))
    if data is None:
        return None
    email: str = json.loads(data)["email"]
    return email


def link_message(sender: str, to: str, link: str) -> EmailMessage:
    """The mail that carries a sign-in link."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = "Your voicestack sign-in link"
    message.set_content(
        "Open this link to sign in to voicestack:\n\n"
        f"{link}\n\n"
        "It works once, within 15 minutes. If you did not ask for it, ignore this mail.\n"
    )
    return message


def send_mail(smtp_url: str, message: EmailMessage, to: str) -> None:
    """Send `message` to `to` alone (whatever its headers say) through `smtp_url`:
    smtp://[user:pass@]host[:port] (STARTTLS when the server offers it) or smtps://... (TLS
    from the start). Blocks: run it in a thread."""
    url = urlsplit(smtp_url)
    if url.scheme not in ("smtp", "smtps") or not url.hostname:
        raise ValueError("--smtp-url must be smtp://[user:pass@]host[:port] or smtps://...")
    context = ssl.create_default_context()
    client: smtplib.SMTP
    if url.scheme == "smtps":
        client = smtplib.SMTP_SSL(
            url.hostname, url.port or 465, timeout=SMTP_TIMEOUT_S, context=context
        )
    else:
        client = smtplib.SMTP(url.hostname, url.port or 25, timeout=SMTP_TIMEOUT_S)
    with client:
        client.ehlo()
        if url.scheme == "smtp" and client.has_extn("starttls"):
            client.starttls(context=context)
            client.ehlo()
        if url.username:
            client.login(unquote(url.username), unquote(url.password or ""))
        client.send_message(message, to_addrs=[to])
