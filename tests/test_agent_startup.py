"""Agent definitions are checked at start-up: `voicestack serve` refuses to start with one line
that names the agent and what is wrong, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.agents import AGENTS_APP
from tests.support.server import REPO, server_env
from voicestack.agent.agents import AgentDefaults, AgentError, build_agents
from voicestack.config import AgentConfig

TIMEOUT_S = 30.0


def serve(tmp_path: Path, config: str) -> subprocess.CompletedProcess[str]:
    """`voicestack serve` with the agents app, the test tools and `config` as its config file."""
    config_path = tmp_path / "voicestack.toml"
    config_path.write_text(config)
    command = [sys.executable, "-m", "voicestack", "serve", "--port", "0", "--quiet-token"]
    command += [
        "--db",
        str(tmp_path / "test.db"),
        "--app",
        AGENTS_APP,
        "--config",
        str(config_path),
    ]
    env = {**server_env(), "VOICESTACK_LOAD_TOOLS": "testtools"}
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
    )


@pytest.mark.parametrize(
    ("config", "error"),
    [
        (
            '[agents.support]\ninstructions = "Me too."\n',
            "Agent 'support' is defined twice: by [agents.support] of the config and by app"
            " tests.apps.agents; give one of them another name.",
        ),
        (
            '[agents.clerk]\ninstructions = "File it."\ntools = ["slow_count", "stapler"]\n',
            "Agent 'clerk' ([agents.clerk] of the config) names the tool 'stapler', which no"
            " loaded plugin provides; `voicestack tools list` shows the tools.",
        ),
        (
            '[agents.clerk]\ninstructions = "File it."\nhandoffs = ["archive"]\n',
            "Agent 'clerk' ([agents.clerk] of the config) hands off to 'archive', which is not an"
            " agent; the agents are: assistant, billing, clerk, ping, pong, support.",
        ),
        (
            '[agents.clerk]\ninstructions = "File it."\n'
            'tools = ["slow_count", "sleepy", "slow_count"]\n',
            "Agent 'clerk' ([agents.clerk] of the config) names the tool 'slow_count' twice in its"
            " tools; name each tool once.",
        ),
    ],
    ids=["duplicate_name", "unknown_tool", "unknown_handoff", "tool_named_twice"],
)
def test_serve_refuses_a_bad_agent_definition_with_one_line(
    tmp_path: Path, config: str, error: str
) -> None:
    done = serve(tmp_path, config)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines()[-1] == f"error: {error}"
    assert "Traceback" not in done.stderr


def test_a_plugin_tool_named_like_a_handoff_tool_is_refused() -> None:
    defaults = AgentDefaults("Help.", "gpt-4o-mini", "alloy", None, 8)
    configured = {
        "desk": AgentConfig(instructions="Hand over.", handoffs=["billing"]),
        "billing": AgentConfig(instructions="Money."),
    }

    with pytest.raises(AgentError) as refused:
        build_agents(defaults, configured, [], ["slow_count", "transfer_to_billing"])

    assert str(refused.value) == (
        "Agent 'desk' ([agents.desk] of the config) hands off to 'billing', but a loaded plugin"
        " provides a tool named 'transfer_to_billing' too; rename that tool, or leave its plugin"
        " out (VOICESTACK_LOAD_TOOLS)."
    )
