"""Named agents (DESIGN §8): the definition apps publish, and the server's registry of them.

An agent is data: a name, instructions, and optionally its own model, tools, voice, temperature,
step limit, the agents it may hand a conversation to, and a description. The serve flags define
the default agent, `assistant`; `voicestack.toml` adds `[agents.NAME]` tables and apps add
`AGENTS = [...]`. The registry is built once at start-up, where every mistake (a name defined
twice, a tool no plugin provides, a handoff to an unknown agent) is one clear AgentError.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from voicestack.config import AgentConfig, Settings
from voicestack.echo import echoed
from voicestack.functions.apps import App
from voicestack.functions.context import QueryCtx
from voicestack.functions.errors import FunctionError
from voicestack.functions.registry import query

DEFAULT_AGENT = "assistant"
VOICE_MODES = ("pipeline", "realtime")
HANDOFF_PREFIX = "transfer_to_"
# A handoff tool is `transfer_to_NAME`, and tool names are at most 64 characters.
MAX_AGENT_NAME = 64 - len(HANDOFF_PREFIX)
_AGENT_NAME = re.compile(rf"[a-zA-Z0-9_-]{{1,{MAX_AGENT_NAME}}}")


class AgentError(ValueError):
    """An agent definition the server cannot start with; the message says which and why."""


def _names(value: Iterable[str] | str | None, what: str, agent: str) -> tuple[str, ...]:
    if isinstance(value, str):
        raise TypeError(f"Agent {agent!r}: {what} must be a list of names, not a string.")
    names = tuple(value or ())
    if not all(isinstance(name, str) for name in names):
        raise TypeError(f"Agent {agent!r}: {what} must be a list of names.")
    return names


@dataclass(frozen=True)
class Agent:
    """An agent: who answers a thread, with which instructions, model, tools and voice.

    `tools=None` offers every loaded tool; a list offers only the tools it names. `handoffs`
    names the agents this one may transfer a conversation to (as `transfer_to_NAME` tools, which
    the model sees described by the target's `description`). Unset fields take the serve flags'.
    """

    name: str
    instructions: str
    model: str | None = None
    tools: Sequence[str] | None = None
    voice: str | None = None
    temperature: float | None = None
    max_steps: int | None = None
    handoffs: Sequence[str] = ()
    description: str = ""
    voice_mode: str | None = None  # "pipeline" or "realtime" (relay); None: --voice-mode
    recall: int | None = None  # matches from the user's other threads in context; None: --recall

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _AGENT_NAME.fullmatch(self.name):
            raise ValueError(
                f"Agent name {self.name!r} must be 1 to {MAX_AGENT_NAME} letters,"
                " digits, '_' or '-'."
            )
        if not isinstance(self.instructions, str):
            raise TypeError(f"Agent {self.name!r}: instructions must be a string.")
        if self.temperature is not None and not 0 <= self.temperature <= 2:
            raise ValueError(f"Agent {self.name!r}: temperature must be from 0 to 2.")
        if self.max_steps is not None and not 1 <= self.max_steps <= 50:
            raise ValueError(f"Agent {self.name!r}: max_steps must be from 1 to 50.")
        if self.voice_mode not in (None, *VOICE_MODES):
            raise ValueError(f"Agent {self.name!r}: voice_mode must be 'pipeline' or 'realtime'.")
        if self.recall is not None and not 0 <= self.recall <= 20:
            raise ValueError(f"Agent {self.name!r}: recall must be from 0 to 20.")
        # Frozen and hashable, whatever sequence the app wrote.
        if self.tools is not None:
            object.__setattr__(self, "tools", _names(self.tools, "tools", self.name))
        object.__setattr__(self, "handoffs", _names(self.handoffs, "handoffs", self.name))


@dataclass(frozen=True)
class AgentDefaults:
    """The serve flags an agent takes what it does not set itself from."""

    instructions: str
    model: str
    voice: str
    temperature: float | None
    max_steps: int
    voice_mode: str = "pipeline"
    recall: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> AgentDefaults:
        """The serve flags' values (--instructions, --model, --voice, ...)."""
        return cls(
            settings.instructions,
            settings.model,
            settings.voice,
            settings.temperature,
            settings.max_steps,
            settings.voice_mode,
            settings.recall,
        )


@dataclass(frozen=True)
class AgentProfile:
    """An agent with the server's defaults filled in: exactly what its replies run as."""

    name: str
    instructions: str
    model: str
    tools: tuple[str, ...] | None
    voice: str
    temperature: float | None
    max_steps: int
    handoffs: tuple[str, ...]
    description: str
    source: str = ""  # where it was defined, for start-up errors
    voice_mode: str = "pipeline"  # how its live conversations run: pipeline, or realtime relay
    recall: int = 0  # how many matches from the user's other threads its context gets

    def describe(self) -> dict[str, Any]:
        """The agent as listed by GET /api/agents and `agents.list`."""
        return {
            "name": self.name,
            "description": self.description,
            "model": self.model,
            "tools": list(self.tools) if self.tools is not None else None,
            "voice": self.voice,
            "handoffs": list(self.handoffs),
        }


def _profile(agent: Agent, defaults: AgentDefaults, source: str) -> AgentProfile:
    return AgentProfile(
        name=agent.name,
        instructions=agent.instructions,
        model=agent.model or defaults.model,
        tools=tuple(agent.tools) if agent.tools is not None else None,
        voice=agent.voice or defaults.voice,
        temperature=agent.temperature if agent.temperature is not None else defaults.temperature,
        max_steps=agent.max_steps if agent.max_steps is not None else defaults.max_steps,
        handoffs=tuple(agent.handoffs),
        description=agent.description,
        source=source,
        voice_mode=agent.voice_mode or defaults.voice_mode,
        recall=agent.recall if agent.recall is not None else defaults.recall,
    )


class UnknownAgent(FunctionError):
    """No agent of that name is defined on this server."""

    def __init__(self, name: str) -> None:
        super().__init__(
            "unknown_agent", f"No agent is named {echoed(name)!r}; GET /api/agents lists them.", 422
        )


@dataclass
class Agents:
    """The agents of a running server, by unique name, the default `assistant` first."""

    profiles: list[AgentProfile] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._by_name = {profile.name: profile for profile in self.profiles}

    def get(self, name: str) -> AgentProfile | None:
        """The agent called `name`, or None."""
        return self._by_name.get(name)

    def require(self, name: str) -> AgentProfile:
        """The agent called `name`; raises UnknownAgent (422 `unknown_agent`) otherwise."""
        profile = self._by_name.get(name)
        if profile is None:
            raise UnknownAgent(name)
        return profile

    def describe(self) -> list[dict[str, Any]]:
        """Every agent, in definition order, as listed by GET /api/agents."""
        return [profile.describe() for profile in self.profiles]

    def models(self) -> dict[str, str]:
        """Each agent's model, by agent name."""
        return {profile.name: profile.model for profile in self.profiles}


def _app_agents(app: App) -> list[Agent]:
    agents = []
    for index, item in enumerate(app.agents):
        if not isinstance(item, Agent):
            raise AgentError(
                f"AGENTS[{index}] of {app.name} must be a voicestack.Agent, not {item!r}."
            )
        agents.append(item)
    return agents


def build_agents(
    defaults: AgentDefaults,
    configured: Mapping[str, AgentConfig],
    apps: Iterable[App],
    tool_names: Iterable[str],
    failed_plugins: Iterable[str] = (),
) -> Agents:
    """The server's agents: `assistant` from the serve flags, then voicestack.toml's, then the
    apps'; raises AgentError for a duplicate name, an unknown tool or an unknown handoff."""
    defined: list[tuple[Agent, str]] = [
        (Agent(DEFAULT_AGENT, defaults.instructions), "the serve flags (--model, --instructions)")
    ]
    for name, config in configured.items():
        try:
            defined.append((Agent(name, **config.model_dump()), f"[agents.{name}] of the config"))
        except (TypeError, ValueError) as exc:
            raise AgentError(f"[agents.{name}] of the config: {exc}") from None
    for app in apps:
        defined += [(agent, f"app {app.name}") for agent in _app_agents(app)]
    profiles: list[AgentProfile] = []
    seen: dict[str, str] = {}
    for agent, source in defined:
        if agent.name in seen:
            raise AgentError(
                f"Agent {agent.name!r} is defined twice: by {seen[agent.name]} and by {source};"
                " give one of them another name."
            )
        seen[agent.name] = source
        profiles.append(_profile(agent, defaults, source))
    _check_references(profiles, set(tool_names), list(failed_plugins))
    return Agents(profiles)


def _check_references(profiles: list[AgentProfile], tools: set[str], failed: list[str]) -> None:
    names = {profile.name for profile in profiles}
    for profile in profiles:
        listed = profile.tools or ()
        twice = sorted({tool for tool in listed if listed.count(tool) > 1})
        if twice:
            raise AgentError(
                f"Agent {profile.name!r} ({profile.source}) names the tool {twice[0]!r} twice"
                " in its tools; name each tool once."
            )
        for tool in listed:
            if tool not in tools:
                note = f" (plugins that failed to load: {', '.join(failed)})" if failed else ""
                raise AgentError(
                    f"Agent {profile.name!r} ({profile.source}) names the tool {tool!r}, which"
                    f" no loaded plugin provides{note}; `voicestack tools list` shows the tools."
                )
        for target in profile.handoffs:
            if target == profile.name:
                raise AgentError(f"Agent {profile.name!r} ({profile.source}) hands off to itself.")
            if target not in names:
                raise AgentError(
                    f"Agent {profile.name!r} ({profile.source}) hands off to {target!r}, which is"
                    f" not an agent; the agents are: {', '.join(sorted(names))}."
                )
            transfer = handoff_tool_name(target)
            if transfer in tools:
                raise AgentError(
                    f"Agent {profile.name!r} ({profile.source}) hands off to {target!r}, but a"
                    f" loaded plugin provides a tool named {transfer!r} too; rename that tool,"
                    " or leave its plugin out (VOICESTACK_LOAD_TOOLS)."
                )


# The agents of the server this process runs. A thread's agent is checked wherever a thread is
# made (the `threads.create` function, app functions through ctx), and a reply's model is
# recorded where its row is made; these are plain functions of the database, so the Runtime
# installs its registry here once at start-up rather than threading it through every caller.
_installed = Agents()


def install_agents(agents: Agents) -> None:
    """Make `agents` the ones this process's threads are checked against."""
    global _installed
    _installed = agents


def find_agent(name: str) -> AgentProfile | None:
    """The installed agent called `name`, or None."""
    return _installed.get(name)


def check_agent_name(name: str) -> str:
    """`name` when an agent of that name is installed (before any is, only `assistant`);
    raises UnknownAgent (422 `unknown_agent`) otherwise."""
    if name == DEFAULT_AGENT and not _installed.profiles:
        return name
    return _installed.require(name).name


def installed_agents() -> Agents:
    """The agents this process's server runs (empty before the Runtime installs them)."""
    return _installed


def handoff_tool_name(agent: str) -> str:
    """The name of the tool that transfers a conversation to `agent`."""
    return HANDOFF_PREFIX + agent


@query("agents.list")
def list_agents(ctx: QueryCtx) -> list[dict[str, Any]]:
    """The server's agents: name, description, model, tools (null: every tool), voice, handoffs."""
    return installed_agents().describe()


AGENT_FUNCTIONS = (list_agents,)
