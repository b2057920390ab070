"""Agents for tests/test_agents.py and tests/test_agent_handoff.py: a support desk that hands
billing questions to a billing agent with no tools, and two agents that hand a thread back and
forth. Each has a model of its own, so a test sees in the provider's log who answered."""

from __future__ import annotations

from voicestack import Agent

SUPPORT = "You are the support desk of Example Co."
BILLING = "You answer questions about invoices and payments."

AGENTS = [
    Agent(
        "support",
        SUPPORT,
        model="support-model",
        tools=["slow_count"],
        handoffs=["billing"],
        description="The front desk: any question about Example Co.",
    ),
    Agent(
        "billing",
        BILLING,
        model="billing-model",
        tools=[],
        voice="verse",
        temperature=0.2,
        max_steps=4,
        description="Questions about invoices, refunds and payments.",
    ),
    Agent("ping", "You are ping.", model="ping-model", handoffs=("pong",)),
    Agent("pong", "You are pong.", model="pong-model", handoffs=("ping",)),
]
