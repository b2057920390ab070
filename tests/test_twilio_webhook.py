"""Phone calls through Twilio (DESIGN §10), the webhook: a signed request is answered with TwiML
that streams the call to the public host with a one-time token; anything unsigned, or signed
over other fields or another URL, is refused."""

from __future__ import annotations

import pytest

from tests.support.agent import Threads
from tests.support.server import ServerProcess
from tests.support.twilio import (
    AUTH_TOKEN,
    PUBLIC_URL,
    TOKEN_PARAMETER,
    call_params,
    new_call_sid,
    post_webhook,
    stream_token,
    twilio_signature,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.agent_server("--public-url", PUBLIC_URL, "--twilio-auth-token", AUTH_TOKEN),
]


# -- the webhook ----------------------------------------------------------------------------


async def test_a_signed_webhook_is_answered_with_twiml_streaming_to_the_public_host(
    server: ServerProcess,
) -> None:
    params = call_params(new_call_sid())
    signature = twilio_signature(f"{PUBLIC_URL}/twilio/voice", params)
    response = await post_webhook(server, params, signature)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    found = TOKEN_PARAMETER.search(response.text)
    assert found is not None, response.text
    token = found.group(1)
    assert response.text == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        '<Stream url="wss://voice.example.com/twilio/stream">'
        f'<Parameter name="token" value="{token}"/>'
        "</Stream></Connect></Response>"
    )
    assert len(token) >= 40
    # Every call gets a token of its own.
    assert await stream_token(server, new_call_sid()) != token


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "",
        "not-a-signature",
        # Signed with another account's token, or over the URL the server sees itself.
        twilio_signature(f"{PUBLIC_URL}/twilio/voice", call_params("CAx"), "another-token"),
        twilio_signature("http://127.0.0.1/twilio/voice", call_params("CAx")),
    ],
    ids=["missing", "empty", "garbage", "other-token", "private-url"],
)
async def test_a_webhook_without_a_valid_signature_is_403(
    server: ServerProcess, threads: Threads, signature: str | None
) -> None:
    response = await post_webhook(server, call_params("CAx"), signature)

    assert response.status_code == 403
    assert response.json() == {
        "error": {
            "code": "invalid_signature",
            "message": "X-Twilio-Signature is missing or does not match this request; check"
            " --twilio-auth-token and that --public-url is the URL Twilio calls.",
        }
    }


async def test_a_signature_covers_every_field(server: ServerProcess) -> None:
    params = call_params(new_call_sid())
    signature = twilio_signature(f"{PUBLIC_URL}/twilio/voice", params)
    response = await post_webhook(server, {**params, "From": "+15550002222"}, signature)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "invalid_signature"


@pytest.mark.parametrize(
    "signed_url",
    [f"{PUBLIC_URL}/twilio/voice", "https://voice.example.com:443/twilio/voice"],
    ids=["no-port", "default-port"],
)
async def test_a_signature_over_the_url_with_or_without_its_default_port_is_good(
    server: ServerProcess, signed_url: str
) -> None:
    params = call_params(new_call_sid())
    response = await post_webhook(server, params, twilio_signature(signed_url, params))

    assert response.status_code == 200, response.text


async def test_a_signature_covers_the_query_string(server: ServerProcess) -> None:
    params = call_params(new_call_sid())
    query = "tenant=acme&line=2"
    signed = twilio_signature(f"{PUBLIC_URL}/twilio/voice?{query}", params)
    unsigned_query = twilio_signature(f"{PUBLIC_URL}/twilio/voice", params)

    assert (await post_webhook(server, params, signed, query)).status_code == 200
    refused = await post_webhook(server, params, unsigned_query, query)
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "invalid_signature")


@pytest.mark.agent_server("--public-url", f"{PUBLIC_URL}/phone", "--twilio-auth-token", AUTH_TOKEN)
async def test_a_public_url_with_a_path_is_signed_and_streamed_under_it(
    server: ServerProcess,
) -> None:
    # The proxy serves the server under /phone and strips it: Twilio signs the URL it called.
    params = call_params(new_call_sid())
    bare = await post_webhook(
        server, params, twilio_signature(f"{PUBLIC_URL}/twilio/voice", params)
    )
    response = await post_webhook(
        server, params, twilio_signature(f"{PUBLIC_URL}/phone/twilio/voice", params)
    )

    assert bare.status_code == 403
    assert response.status_code == 200, response.text
    assert '<Stream url="wss://voice.example.com/phone/twilio/stream">' in response.text


@pytest.mark.agent_server(provider=False)
async def test_without_an_auth_token_phone_calls_are_off(server: ServerProcess) -> None:
    params = call_params(new_call_sid())
    response = await post_webhook(
        server, params, twilio_signature(f"{PUBLIC_URL}/twilio/voice", params)
    )

    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": "twilio_not_configured",
            "message": "Phone calls are off: start the server with --twilio-auth-token and"
            " --public-url.",
        }
    }
