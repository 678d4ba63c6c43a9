"""The config file (v1) -> frozen, typed objects; every problem at once, with file:line:col.

One module per section; each key is declared once, as a field (declare.py),
and both the reading and the JSON Schema (schema.py) come from that field.
"""

from .cookies import CookiesConfig
from .endpoints import Listen
from .identity import DEFAULT_IDENTITY_HEADERS, AssertionConfig
from .login import LoginConfig
from .root import LOG_LEVELS, RESTART_KEYS, Config, LogLevel, load
from .tokens import TokensConfig

__all__ = [
    "DEFAULT_IDENTITY_HEADERS",
    "LOG_LEVELS",
    "RESTART_KEYS",
    "AssertionConfig",
    "Config",
    "CookiesConfig",
    "Listen",
    "LogLevel",
    "LoginConfig",
    "TokensConfig",
    "load",
]
