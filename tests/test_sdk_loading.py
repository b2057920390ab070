"""The OpenAI SDK loads only when a provider is configured (voicestack/agent/llm.py): importing
it is about a third of a server's start, and a server with no provider never calls one.

Likewise numpy (for live audio, and imported by sqlite-vec's package) and Authlib (for sign-in
with a provider) load when they are first used, not when a server starts.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.agent import StartAgentServer, Threads
from tests.support.realtime import FRAME_BYTES, conversation
from tests.support.server import REPO
from voicestack.testing.fake_openai import FakeOpenAI

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
    names = ("numpy", "soxr", "authlib", "joserfc", "httpx2")
    assert modules_loaded_after(code, *names) == []


def test_live_audio_loads_numpy_when_it_first_converts() -> None:
    code = (
        "from voicestack.voice.realtime import codec\n"
        "import sys\n"
        "assert 'numpy' not in sys.modules\n"
        "assert codec.pcm16_to_mulaw(codec.mulaw_to_pcm16(bytes(range(256)))) != b''"
    )
    assert modules_loaded_after(code, "numpy") == ["numpy"]


# Logs, to $NUMPY_IMPORT_LOG, which thread first imports numpy: run first in a test's
# interpreter, or as the sitecustomize of a server's.
NUMPY_SPY = """
import os, sys, threading

class _NumpySpy:
    def find_spec(self, name, path=None, target=None):
        if name == "numpy":
            main = threading.current_thread() is threading.main_thread()
            with open(os.environ["NUMPY_IMPORT_LOG"], "a") as log:
                log.write("main\\n" if main else "worker\\n")
        return None

sys.meta_path.insert(0, _NumpySpy())
"""


def test_load_audio_libraries_imports_numpy_and_soxr_in_a_worker_thread(tmp_path: Path) -> None:
    log = tmp_path / "numpy-imports.log"
    code = (
        f"import os\nos.environ['NUMPY_IMPORT_LOG'] = {str(log)!r}\n{NUMPY_SPY}\n"
        "import asyncio\n"
        "from voicestack.voice.realtime import codec\n"
        "asyncio.run(codec.load_audio_libraries())"
    )
    assert modules_loaded_after(code, "numpy", "soxr") == ["numpy", "soxr"]
    assert log.read_text().splitlines() == ["worker"]


def test_authlib_loads_only_when_a_sign_in_provider_is_configured() -> None:
    make = (
        "from voicestack.config import Settings\n"
        "from voicestack.http.signin_providers import Providers\n"
        "async def write(fn):\n"
        "    return None\n"
    )
    assert modules_loaded_after(f"{make}Providers(Settings(), write)", "authlib") == []
    configured = "Settings(oidc_issuer='https://id.example', oidc_client_id='voicestack')"
    assert modules_loaded_after(f"{make}Providers({configured}, write)", "authlib") == ["authlib"]


@pytest.mark.anyio
async def test_a_server_imports_numpy_off_its_event_loop_at_its_first_live_conversation(
    start_agent_server: StartAgentServer, fake: FakeOpenAI, tmp_path: Path
) -> None:
    spy = tmp_path / "spy"
    spy.mkdir()
    (spy / "sitecustomize.py").write_text(NUMPY_SPY)
    log = tmp_path / "numpy-imports.log"
    path = os.pathsep.join([str(spy), str(REPO)])
    server = start_agent_server(
        fake.api_base, env={"PYTHONPATH": path, "NUMPY_IMPORT_LOG": str(log)}
    )
    async with server.client() as http:
        thread_id = await Threads(http).create()
    started_without = not log.exists()
    async with conversation(server, thread_id) as talk:
        await talk.start()
        await talk.say(bytes(FRAME_BYTES * 10))
    await asyncio.sleep(0.2)

    assert started_without
    assert log.read_text().splitlines() == ["worker"]
