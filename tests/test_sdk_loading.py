"""The OpenAI SDK loads only when a provider is configured (voicestack/agent/llm.py): importing
it is about a third of a server's start, and a server with no provider never calls one.

Likewise numpy (for live audio, and imported by sqlite-vec's package) and Authlib (for sign-in
with a provider) load when they are first used, not when a server starts.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.server import REPO

SERVER_MODULES = "import cli.main, cli.serve, voicestack.serve.server, voicestack.http.app"


def sdk_loaded_after(code: str) -> bool:
    """Whether `openai` is among a fresh interpreter's modules once `code` ran."""
    return modules_loaded_after(code, "openai") == ["openai"]


def modules_loaded_after(code: str, *names: str) -> list[str]:
    """Which of `names` are among a fresh interpreter's modules once `code` ran."""
    probe = f"import sys\nprint(','.join(n for n in {names!r} if n in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{probe}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    last = done.stdout.splitlines()[-1] if done.stdout.strip() else ""
    return [name for name in last.split(",") if name]


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


def test_a_server_opening_its_database_loads_sqlite_vec_without_numpy_or_authlib(
    tmp_path: Path,
) -> None:
    code = (
        f"{SERVER_MODULES}\n"
        "from pathlib import Path\n"
        "from voicestack.store.connection import open_connection, vector_search_unavailable\n"
        f"conn = open_connection(Path({str(tmp_path / 'v.db')!r}))\n"
        "assert vector_search_unavailable() == '', vector_search_unavailable()\n"
        "assert conn.execute('SELECT vec_version()').fetchone()"
    )
    assert modules_loaded_after(code, "numpy", "soxr", "authlib", "joserfc") == []


def test_live_audio_loads_numpy_when_it_first_converts() -> None:
    code = (
        "from voicestack.voice.realtime import codec\n"
        "import sys\n"
        "assert 'numpy' not in sys.modules\n"
        "assert codec.pcm16_to_mulaw(codec.mulaw_to_pcm16(bytes(range(256)))) != b''"
    )
    assert modules_loaded_after(code, "numpy") == ["numpy"]


def test_a_live_conversation_loads_them_in_a_worker_thread_before_its_session() -> None:
    code = (
        "import asyncio, sys, threading\n"
        "from voicestack.voice.realtime import codec\n"
        "importers = []\n"
        "class Spy:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'numpy':\n"
        "            importers.append(threading.current_thread() is threading.main_thread())\n"
        "sys.meta_path.insert(0, Spy())\n"
        "asyncio.run(codec.load_audio_libraries())\n"
        "assert importers == [False], importers"
    )
    assert modules_loaded_after(code, "numpy", "soxr") == ["numpy", "soxr"]
