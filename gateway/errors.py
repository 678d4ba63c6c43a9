"""The gateway's error classes.

Callers branch on the class, never on the message: the message is for humans
and may change, the class is the contract.
"""

from __future__ import annotations

from dataclasses import dataclass


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config file, located for a human to fix."""

    file: str
    line: int
    col: int
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.key}: {self.message}"


class ConfigError(GatewayError):
    """The config could not be loaded; carries every problem found, not just the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class TokenError(GatewayError):
    """A presented token cannot be trusted. Subclasses say why, for logs and metrics."""

    reason = "invalid"


class TokenInvalid(TokenError):
    """Bad signature, wrong algorithm, issuer, audience, type or shape."""


class TokenExpired(TokenError):
    """Well-formed and correctly signed, but past `exp` (plus leeway).

    Kept apart from TokenInvalid because an expired access token is the normal
    trigger for a refresh, and must never lead to a 403.
    """

    reason = "expired"


class BadPath(GatewayError):
    """A request path whose meaning is ambiguous; answered with 400, never guessed."""
