"""`gateway check-config --online`: fetch each provider's discovery document and JWKS.

The same fetch and checks `serve` makes (discovery.py), once, with each
provider's `timeout`; a report line per provider. Never part of a plain
`check-config`, which must not depend on the network.
"""

from __future__ import annotations

from ..config.providers import ProviderConfig
from .discovery import ProviderState
from .http import ProviderUnavailable, new_session
from .verify import allowed_algorithms


async def check(providers: tuple[ProviderConfig, ...]) -> list[tuple[bool, str]]:
    """(ok, line) per provider."""
    lines = []
    async with new_session() as session:
        for provider in providers:
            state = ProviderState(provider)
            try:
                metadata = await state.discover(session)
            except ProviderUnavailable as exc:
                lines.append((False, f"provider {provider.id}: unreachable: {exc}"))
                continue
            algorithms = sorted(allowed_algorithms(metadata, provider.client_secret))
            keys = len(list(state.keys or ()))
            if not algorithms:
                lines.append(
                    (False, f"provider {provider.id}: no ID token algorithm the gateway accepts")
                )
                continue
            logout = "yes" if metadata.end_session_endpoint else "no"
            lines.append(
                (
                    True,
                    f"provider {provider.id}: ok: {keys} signing key{'s' * (keys != 1)},"
                    f" algorithms {', '.join(algorithms)}, token endpoint"
                    f" {metadata.token_endpoint}, end_session_endpoint {logout}",
                )
            )
    return lines
