"""The OpenID Connect paths, answered before the route table (see relying.py for the list)."""

from __future__ import annotations

from aiohttp import web

from .. import responses
from ..login import Result
from ..runtime import Snapshot
from . import backchannel, flow


async def handle(request: web.BaseRequest, snapshot: Snapshot, path: str) -> Result:
    relying = snapshot.oidc
    assert relying is not None  # noqa: S101 - the pipeline routes here only for its paths
    provider_id, action = relying.paths[path]
    provider = relying.providers[provider_id]
    if action == "backchannel":
        return await backchannel.handle(request, snapshot, provider)
    if request.method != "GET":  # a callback's state is used once: never by a HEAD
        return Result(responses.method_not_allowed(request, "GET"), "oidc_method")
    if action == "start":
        return await flow.start(request, snapshot, provider)
    return await flow.callback(request, snapshot, provider)
