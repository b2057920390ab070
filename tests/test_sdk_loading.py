"""The OpenAI SDK loads only when a provider is configured (voicestack/agent/llm.py): importing
it is about a third of a server's start, and a server with no provider never calls one."""

from __future__ import annotations

import subprocess
import sys

from tests.support.server import REPO

SERVER_MODULES = "import cli.main, cli.serve, voicestack.serve.server, voicestack.http.app"


def sdk_loaded_after(code: str) -> bool:
    """Whether `openai` is among a fresh interpreter's modules once `code` ran."""
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint('openai' in sys.modules)"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1] == "True"


def test_the_server_and_the_cli_import_without_the_sdk() -> None:
    assert not sdk_loaded_after(SERVER_MODULES)


def test_a_provider_with_neither_key_nor_base_url_leaves_the_sdk_unloaded() -> None:
    code = (
        f"{SERVER_MODULES}\n"
        "from voicestack.agent.llm import ChatProvider, ProviderSettings\n"
        "provider = ChatProvider(ProviderSettings(base_url=None, api_key=None))\n"
        "assert not provider.configured"
    )
    assert not sdk_loaded_after(code)


def test_a_configured_provider_loads_the_sdk_as_it_is_made_not_at_its_first_call() -> None:
    code = (
        "from voicestack.agent.llm import ChatProvider, ProviderSettings\n"
        "ChatProvider(ProviderSettings(base_url='http://127.0.0.1:9/v1', api_key=None))"
    )
    assert sdk_loaded_after(code)
