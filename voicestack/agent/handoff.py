"""What one agent offers the model, and the handoff that moves a thread to another agent.

An agent's tools are every loaded tool (`tools=None`) or the ones it names, plus one
`transfer_to_NAME` tool per agent in its `handoffs`, described by that agent's description.
A transfer changes the thread's agent, records a `system` message ("Transferred to NAME"),
starts the reply's next usage part (priced at the new agent's model) and finishes the tool call,
all in one transaction; the reply then goes on as the new agent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from voicestack.agent.agents import AgentProfile, Agents, handoff_tool_name
from voicestack.agent.records import emit_message, now
from voicestack.agent.reply_parts import open_part
from voicestack.agent.reply_state import Claim, still_streaming, update_tool_call
from voicestack.agent.threads import insert_message
from voicestack.agent.tool_loading import ToolSet
from voicestack.agent.tools import Tool
from voicestack.store.db import WriteDB


@dataclass(frozen=True)
class Transfer:
    """A call of a `transfer_to_NAME` tool: the agent it hands the thread to."""

    target: AgentProfile


def transfer_note(target: str) -> str:
    """The text of the system message a handoff adds to the thread."""
    return f"Transferred to {target}"


def _transfer_spec(name: str, target: AgentProfile) -> dict[str, Any]:
    description = target.description or f"Transfer the conversation to the {target.name} agent."
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": {}},
        },
    }


@dataclass
class AgentTools:
    """The tools one agent offers the model: plugin tools by name, and its transfers."""

    agent: AgentProfile
    tools: list[Tool] = field(default_factory=list)
    transfers: dict[str, AgentProfile] = field(default_factory=dict)

    @classmethod
    def of(cls, agent: AgentProfile, toolset: ToolSet, agents: Agents) -> AgentTools:
        """The tools `agent` may call among the loaded ones (its names were checked at start)."""
        transfers = {handoff_tool_name(name): agents.require(name) for name in agent.handoffs}
        if agent.tools is None:
            tools = [tool for tool in toolset.tools if tool.name not in transfers]
        else:
            tools = [tool for name in agent.tools if (tool := toolset.get(name)) is not None]
        return cls(agent, tools, transfers)

    def get(self, name: str) -> Tool | None:
        """The plugin tool called `name`, if this agent offers it."""
        return next((tool for tool in self.tools if tool.name == name), None)

    def transfer(self, name: str) -> Transfer | None:
        """The handoff that the tool `name` makes, if it is one of this agent's transfers."""
        target = self.transfers.get(name)
        return Transfer(target) if target is not None else None

    def names(self) -> list[str]:
        """The names of every tool offered."""
        return [tool.name for tool in self.tools] + list(self.transfers)

    def openai_specs(self) -> list[dict[str, Any]]:
        """Every tool offered, as entries of an OpenAI chat completion's `tools` list."""
        specs = [tool.openai_spec() for tool in self.tools]
        return specs + [_transfer_spec(name, target) for name, target in self.transfers.items()]


def hand_off(db: WriteDB, claim: Claim, call_row_id: str, target: AgentProfile) -> bool:
    """Move the claim's thread to `target`: the thread's agent, a `system` message, the reply's
    agent and model (the last to write it), a new usage part of the reply on the target's model,
    and the transfer's tool call done. False (nothing written) when the reply was stopped
    meanwhile."""
    if not still_streaming(db, claim.message_id):
        return False
    db.execute(
        "UPDATE threads SET agent = ?, updated_at = ? WHERE id = ?",
        (target.name, now(), claim.thread_id),
    )
    insert_message(db, claim.thread_id, "system", "complete", text=transfer_note(target.name))
    db.execute(
        "UPDATE messages SET agent = ?, model = ?, updated_at = ? WHERE id = ?",
        (target.name, target.model, now(), claim.message_id),
    )
    open_part(db, claim.message_id, target.name, target.model)
    emit_message(db, claim.message_id)
    update_tool_call(db, call_row_id, status="done", result={"agent": target.name})
    return True


def instructions_of(
    messages: list[dict[str, Any]], before: AgentProfile, after: AgentProfile
) -> list[dict[str, Any]]:
    """The chat messages of a reply with `before`'s instructions replaced by `after`'s."""
    rest = messages
    if messages and messages[0] == {"role": "system", "content": before.instructions}:
        rest = messages[1:]
    if not after.instructions:
        return list(rest)
    return [{"role": "system", "content": after.instructions}, *rest]
