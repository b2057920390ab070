"""Who is calling: a leaf that every layer may import."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made the call: a user id, a display name and a role."""

    id: str
    name: str
    role: str = "user"

    @property
    def is_admin(self) -> bool:
        """True for an administrator."""
        return self.role == "admin"
