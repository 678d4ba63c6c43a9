"""The gateway's own pages: what a person sees when the gateway answers itself (SPEC 7.2)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from gateway.login import wait_in_words
from tests.conftest import GatewayFactory, free_port, mint, session_extra
from tests.helpers import FORM_HEADERS, sign_in

HTML = {"Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"}
TITLE = "pages:\n  title: Acme <Reports>\n"


def request_id_shown(page: str) -> str:
    found = re.search(r"Request id: <code>([^<]+)</code>", page)
    assert found, page
    return found[1]


async def test_403_to_a_signed_in_user_names_them_and_offers_a_way_out(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    client = await make_gateway(session_extra(tmp_path, more=TITLE))
    cookies = await sign_in(client, "bob", "builder")
    response = await client.get(
        "/admin/x?y=1", headers={**HTML, "Cookie": f"access_token={cookies['access_token']}"}
    )
    assert response.status == 403
    page = await response.text()
    assert "<strong>bob</strong>" in page
    assert '<form method="post" action="/logout">' in page
    assert 'href="/login?next=/admin/x%3Fy%3D1"' in page
    assert request_id_shown(page) == response.headers["X-Request-Id"]
    assert "Acme &lt;Reports&gt;" in page  # the title, escaped
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    # programs keep the JSON they had
    api = await client.get(
        "/admin/x", headers={"Cookie": f"access_token={cookies['access_token']}"}
    )
    assert await api.json() == {
        "error": "forbidden",
        "message": "You do not have access to this page.",
    }


async def test_a_bearer_user_is_not_offered_a_sign_out_form(
    make_gateway: GatewayFactory, tmp_path: Path, secret: str
) -> None:
    client = await make_gateway(session_extra(tmp_path))
    token = mint(secret, sub="<script>x</script>", roles=["viewer"])
    response = await client.get("/admin/x", headers={**HTML, "Authorization": f"Bearer {token}"})
    page = await response.text()
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script>" not in page
    assert "/logout" not in page  # a form cannot sign a bearer token out
    assert "Sign in as someone else" in page


async def test_deny_page_offers_no_session_actions(make_gateway: GatewayFactory) -> None:
    client = await make_gateway()
    response = await client.get("/internal/x", headers=HTML)
    page = await response.text()
    assert response.status == 403
    assert "You do not have access to this page." in page
    assert "Sign out" not in page
    assert request_id_shown(page) == response.headers["X-Request-Id"]


async def test_502_and_400_pages_say_what_to_do_with_the_request_id(
    make_gateway: GatewayFactory,
) -> None:
    client = await make_gateway(
        routes="routes: []\ndefault: public\n", upstream_url=f"http://127.0.0.1:{free_port()}"
    )
    response = await client.get("/x", headers=HTML)
    page = await response.text()
    assert response.status == 502
    assert "<h1>Application unreachable" in page
    assert "Try again in a moment" in page
    assert request_id_shown(page) == response.headers["X-Request-Id"]
    api = await client.get("/x")
    assert await api.json() == {
        "error": "bad_gateway",
        "message": "The application is not reachable.",
    }


async def test_429_says_how_long_to_wait_in_words(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    client = await make_gateway(session_extra(tmp_path, login="max_failures: 1"))
    for _ in range(2):
        response = await client.post(
            "/login",
            data={"username": "alice", "password": "wrong"},
            headers={**FORM_HEADERS, **HTML},
        )
    assert response.status == 429
    page = await response.text()
    minutes = re.search(r"Wait about (\d+) minutes?, then try again", page)
    assert minutes, page
    assert int(response.headers["Retry-After"]) > 60 * (int(minutes[1]) - 1)
    assert '<form method="post" action="/login">' in page


@pytest.mark.parametrize(
    ("seconds", "words"),
    [(0.2, "1 second"), (30, "30 seconds"), (61, "about 2 minutes"), (900, "about 15 minutes"),
     (3600, "about 1 hour"), (3601, "about 2 hours")],
)  # fmt: skip
def test_wait_in_words(seconds: float, words: str) -> None:
    assert wait_in_words(seconds) == words


async def test_a_cross_site_sign_in_shows_the_form_again_and_logs_why(
    make_gateway: GatewayFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_gateway(session_extra(tmp_path))
    with caplog.at_level(logging.WARNING, logger="gateway.security"):
        response = await client.post(
            "/login",
            data={"username": "alice", "password": "wonderland", "next": "/dashboard"},
            headers={"Origin": "https://evil.example", **HTML},
            allow_redirects=False,
        )
    assert response.status == 403
    page = await response.text()
    assert "came from another site" in page
    assert '<input type="hidden" name="next" value="/dashboard">' in page or "next" in page
    assert "Set-Cookie" not in response.headers
    records = [r for r in caplog.records if getattr(r, "event", None) == "cross_site"]
    assert records and records[0].origin == "https://evil.example"  # type: ignore[attr-defined]
    assert records[0].host.startswith("127.0.0.1")  # type: ignore[attr-defined]


async def test_a_replacement_error_template_extends_the_built_in_look(
    make_gateway: GatewayFactory, tmp_path: Path
) -> None:
    (tmp_path / "mine.html").write_text(
        '{% extends "base.html" %}{% block content %}<h1>Ours: {{ status }}</h1>'
        "<p>{{ message }}</p>{% endblock %}"
    )
    client = await make_gateway(f"pages:\n  template: {tmp_path / 'mine.html'}\n")
    response = await client.get("/internal/x", headers=HTML)
    page = await response.text()
    assert "<h1>Ours: 403</h1>" in page
    assert "font: 16px/1.5 system-ui" in page  # base.html's style
    assert request_id_shown(page) == response.headers["X-Request-Id"]


async def test_a_proxy_that_rewrote_host_is_named_as_the_cause(
    make_gateway: GatewayFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Same-origin by the browser's own word, yet Origin is not the Host that arrived."""
    client = await make_gateway(session_extra(tmp_path))
    headers = {"Origin": "https://app.example", "Sec-Fetch-Site": "same-origin", **HTML}
    with caplog.at_level(logging.WARNING, logger="gateway.security"):
        response = await client.post(
            "/login", data={"username": "alice", "password": "wonderland"}, headers=headers
        )
        api = await client.post(
            "/api/x",
            headers={**headers, "Cookie": "access_token=x"},
        )
    assert response.status == 403
    page = await response.text()
    assert "a proxy in front of the gateway changed the Host header" in page
    assert "you used app.example" in page
    records = [r for r in caplog.records if getattr(r, "why", None) == "host_rewritten"]
    assert records and records[0].levelname == "ERROR"
    assert api.status == 403
    assert "changed the Host header" in (await api.json())["message"]
