"""What is refused before any decision: requests aiohttp's parser lets through but that
an upstream could read differently, or must never be asked (SPEC 7.1). Each check names
what it refused, for the 400 and the log; none contacts the upstream.
"""

from __future__ import annotations

import base64
import binascii
import re

from aiohttp import HttpVersion10, hdrs, web

from . import proxy, responses

_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]{0,5})?$")


_GOOD_HOSTS: set[str] = set()  # Host values seen well-formed: a set lookup, not a regex


def _good_host(host: str) -> bool:
    if not _HOST.match(host):
        return False
    if len(_GOOD_HOSTS) < 1024:  # bounded: a client cycling names cannot grow it
        _GOOD_HOSTS.add(host)
    return True


def malformed(request: web.BaseRequest) -> str | None:
    """What aiohttp's parser lets through but the upstream must never be asked."""
    if request.method == hdrs.METH_CONNECT:
        return "CONNECT is not proxied"
    if request.version < HttpVersion10:
        return "HTTP/0.9 is not supported"
    headers = request.headers
    if hdrs.TRANSFER_ENCODING in headers:
        codings = ",".join(headers.getall(hdrs.TRANSFER_ENCODING)).split(",")
        if [c.strip().lower() for c in codings] != ["chunked"]:
            # a coding other than chunked would be dropped undecoded on the way: never guessed
            return "Transfer-Encoding other than chunked is not supported"
    host = headers.get(hdrs.HOST)
    if host and host not in _GOOD_HOSTS and not _good_host(host):
        # forwarded as is (preserve_host) and read by the app: one well-formed host[:port]
        # (aiohttp's parser already refuses a second Host header)
        return "the Host header is not one host[:port]"
    return None


def bad_handshake(request: web.BaseRequest) -> web.Response | None:
    """RFC 6455 4.2.1: a key of 16 random bytes in base64, version 13."""
    key = request.headers.get(hdrs.SEC_WEBSOCKET_KEY, "")
    try:
        valid = len(base64.b64decode(key.encode("ascii"), validate=True)) == 16
    except (binascii.Error, UnicodeEncodeError):
        valid = False
    if not valid or len(request.headers.getall(hdrs.SEC_WEBSOCKET_KEY, ())) != 1:
        why = "a WebSocket upgrade needs one valid Sec-WebSocket-Key"
        return responses.bad_request(request, why)
    if request.headers.get(hdrs.SEC_WEBSOCKET_VERSION, "").strip() != "13":
        return responses.upgrade_required(request)
    return None


def is_websocket(request: web.BaseRequest) -> bool:
    return (
        request.method == "GET"
        and request.headers.get(hdrs.UPGRADE, "").lower() == "websocket"
        and "upgrade" in proxy.connection_tokens(request.headers)
    )
