"""gateway: a reverse-proxy authentication gateway with JWT cookies, on aiohttp."""

__version__ = "0.1.0"
