"""Django (PyPI) behind the gateway: a project from `django-admin startproject` with its
defaults (DEBUG on, CSRF middleware on, ALLOWED_HOSTS empty, so Django's development
default of localhost and 127.0.0.1), plus one view whose form carries `{% csrf_token %}`.

Django's CSRF check compares `Origin` with `Host`: the form POST through the gateway is
accepted only when the gateway forwards the client's `Host`. A forged token is still
refused, so the check is really on."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.compat.conftest import App, dump, path_of, python_app, sign_in, wait
from tests.conftest import GatewayProcess

pytestmark = pytest.mark.compat

VERSION = "5.2.19"

VIEWS = '''
from django.http import HttpResponse
from django.template import engines

PAGE = engines["django"].from_string("""<!doctype html><title>Guestbook</title>
<h1>Guestbook</h1>
{% if name %}<p id="thanks">Thanks, {{ name }}!</p>{% endif %}
<p>This page: <a id="self" href="{{ absolute }}">{{ absolute }}</a></p>
<form method="post">{% csrf_token %}
  <input id="name" name="name" required> <button id="sign" type="submit">Sign</button>
</form>""")


def guestbook(request):
    name = request.POST.get("name") if request.method == "POST" else None
    absolute = request.build_absolute_uri("/guestbook/")
    return HttpResponse(PAGE.render({"name": name, "absolute": absolute}, request))
'''


def _project(bin_dir: Path, where: Path) -> Path:
    """`django-admin startproject guestsite`, then one view and its URL; nothing else changed."""
    where.mkdir()
    subprocess.run(
        [str(bin_dir / "django-admin"), "startproject", "guestsite", str(where)],
        check=True,
        timeout=60,
    )
    (where / "guestsite" / "views.py").write_text(VIEWS)
    urls = where / "guestsite" / "urls.py"
    urls.write_text(
        urls.read_text()
        + "\nfrom guestsite.views import guestbook  # noqa: E402\n"
        + 'urlpatterns.append(path("guestbook/", guestbook))\n'
    )
    settings = (where / "guestsite" / "settings.py").read_text()
    assert "DEBUG = True" in settings and "ALLOWED_HOSTS = []" in settings
    assert "django.middleware.csrf.CsrfViewMiddleware" in settings
    return where


def _flow(driver: webdriver.Chrome, gateway: GatewayProcess) -> None:
    sign_in(driver, gateway, "/guestbook/")
    wait(driver).until(lambda d: d.find_elements(By.ID, "name"), "Django's form")
    assert path_of(driver) == "/guestbook/"
    # URLs Django builds name the gateway; Django's own CSRF cookie came through
    assert driver.find_element(By.ID, "self").text == gateway.url + "/guestbook/"
    assert driver.get_cookie("csrftoken"), [c["name"] for c in driver.get_cookies()]

    # the user signs the guestbook: Django's CSRF check passes (Origin matches Host)
    driver.find_element(By.ID, "name").send_keys("Ada")
    driver.find_element(By.ID, "sign").click()
    wait(driver).until(
        lambda d: d.find_elements(By.ID, "thanks") or "403" in d.title,
        "the answer to the form",
    )
    body = driver.find_element(By.TAG_NAME, "body").text
    assert driver.find_elements(By.ID, "thanks"), f"Django refused the form:\n{body[:2000]}"
    assert driver.find_element(By.ID, "thanks").text == "Thanks, Ada!"

    # the check is on: the same form with a forged token is refused by Django itself
    driver.execute_script(
        "document.querySelector('[name=csrfmiddlewaretoken]').value = 'x'.repeat(64)"
    )
    driver.find_element(By.ID, "name").send_keys("Mallory")
    driver.find_element(By.ID, "sign").click()
    wait(driver).until(lambda d: "CSRF verification failed" in d.page_source, "Django's 403")


def _django(run_app: Callable[..., App], tmp_path: Path) -> App:
    bin_dir = python_app("django", VERSION)
    project = _project(bin_dir, tmp_path / "project")
    return run_app(
        "django",
        [str(bin_dir / "python"), "manage.py", "runserver", "127.0.0.1:{port}", "--noreload"],
        cwd=project,
        ready_path="/guestbook/",
    )


def test_django_csrf_form_through_the_gateway(
    browser: webdriver.Chrome,
    run_app: Callable[..., App],
    gateway_for: Callable[..., GatewayProcess],
    tmp_path: Path,
) -> None:
    app = _django(run_app, tmp_path)
    gateway = gateway_for(app.url)
    try:
        _flow(browser, gateway)
    except BaseException:
        print(dump(gateway, app, browser))
        raise


def test_django_control_without_preserve_host(
    browser: webdriver.Chrome,
    run_app: Callable[..., App],
    gateway_for: Callable[..., GatewayProcess],
    tmp_path: Path,
) -> None:
    """The check above can fail: with `preserve_host: false` Django sees its own
    host:port as `Host`, the browser's `Origin` does not match, and the form is refused."""
    app = _django(run_app, tmp_path)
    gateway = gateway_for(app.url, extra="preserve_host: false\n")
    try:
        sign_in(browser, gateway, "/guestbook/")
        wait(browser).until(lambda d: d.find_elements(By.ID, "name"), "Django's form")
        browser.find_element(By.ID, "name").send_keys("Ada")
        browser.find_element(By.ID, "sign").click()
        wait(browser).until(lambda d: "CSRF verification failed" in d.page_source, "a 403")
        assert "Origin checking failed" in browser.page_source
        assert not browser.find_elements(By.ID, "thanks")
    except BaseException:
        print(dump(gateway, app, browser))
        raise
