"""The bundled demo app: a page that shows what the gateway forwarded to it.

It has no auth of its own, like the legacy apps the gateway is put in front
of; everything it knows about the user comes from the X-User-* headers.
"""

from __future__ import annotations

import argparse
import html

from aiohttp import web

_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>demo app: {path}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:48rem;margin:2rem auto}}
td{{padding:.2rem .6rem;border-bottom:1px solid #ddd;font-family:monospace}}
.who{{background:#eef6ee;padding:1rem;border-radius:.5rem}}</style></head>
<body><h1>Demo app</h1>
<p class="who">{who}</p>
<p>You asked for <code>{method} {path}</code>. Try
<a href="/">/</a> (public), <a href="/dashboard">/dashboard</a> (sign-in required),
<a href="/admin">/admin</a> (role admin), <a href="/api/whoami">/api/whoami</a> (401 JSON).</p>
<h2>Headers the app received</h2><table>{rows}</table></body></html>
"""


async def page(request: web.Request) -> web.StreamResponse:
    if request.path.startswith("/api/"):
        identity = {k: v for k, v in request.headers.items() if k.lower().startswith("x-user-")}
        return web.json_response({"path": request.path, "identity": identity})
    user = request.headers.get("X-User-Id")
    who = (
        f"Signed in as <b>{html.escape(user)}</b>"
        f" (roles: {html.escape(request.headers.get('X-User-Roles', 'none'))})"
        ' <form method="post" action="/logout" style="display:inline">'
        "<button>Sign out</button></form>"
        if user
        else "Anonymous: the gateway forwarded no identity."
    )
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>"
        for k, v in request.headers.items()
    )
    body = _PAGE.format(
        who=who, method=request.method, path=html.escape(request.path_qs), rows=rows
    )
    return web.Response(text=body, content_type="text/html")


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    args = parser.parse_args()
    web.run_app(make_app(), host=args.host, port=args.port, print=None, access_log=None)
