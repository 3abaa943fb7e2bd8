"""Signing in and out of the console: token check, cookies, CSRF, redirects and page headers."""

import re

import plotly.offline
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from controlplane.models import ApiToken

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


def login(client, token: str):
    form = client.get("/ui/login")
    return client.post("/ui/login", data={"token": token, "csrf_token": csrf_of(form.text)}, follow_redirects=False)


def test_unauthenticated_pages_redirect_to_login_and_data_is_401(client):
    page = client.get("/ui", follow_redirects=False)
    assert page.status_code == 303
    assert page.headers["location"] == "/ui/login"
    data = client.get("/ui/data/overview")
    assert data.status_code == 401
    assert data.headers["content-type"] == "application/problem+json"


def test_login_sets_a_strict_httponly_session_cookie_and_redirects(client, seeded):
    response = login(client, seeded.admin_token)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui"
    cookies = response.headers.get_list("set-cookie")
    session = next(c for c in cookies if c.startswith("hp_console="))
    assert "HttpOnly" in session and "SameSite=strict" in session and "Path=/ui" in session
    assert "Secure" not in session  # plain http here; see the https test
    page = client.get("/ui")
    assert page.status_code == 200
    assert "ops-admin" in page.text and "all tenants" in page.text


def test_session_cookie_is_secure_over_https(console_app, seeded):
    with TestClient(console_app, base_url="https://testserver") as client:
        response = login(client, seeded.admin_token)
    assert response.status_code == 303
    assert all("Secure" in c for c in response.headers.get_list("set-cookie"))


def test_bad_revoked_and_expired_tokens_are_refused_with_401(client, seeded):
    for token in ("hp_no_such_token", seeded.revoked_token, seeded.expired_token):
        response = login(client, token)
        assert response.status_code == 401, token
        assert "unknown, revoked or expired" in response.text
        assert "hp_console" not in response.cookies
    assert client.get("/ui", follow_redirects=False).status_code == 303


def test_login_without_matching_csrf_token_is_403(client, seeded):
    client.get("/ui/login")  # sets the CSRF cookie
    forged = client.post("/ui/login", data={"token": seeded.admin_token, "csrf_token": "forged"}, follow_redirects=False)
    assert forged.status_code == 403
    assert "security check failed (CSRF)" in forged.text
    missing = client.post("/ui/login", data={"token": seeded.admin_token}, follow_redirects=False)
    assert missing.status_code == 403
    # A cross-site form post carries no cookie at all (SameSite=Strict), so even the right field value fails.
    client.cookies.clear()
    assert client.post("/ui/login", data={"token": seeded.admin_token, "csrf_token": "x"}).status_code == 403
    assert client.get("/ui", follow_redirects=False).status_code == 303


def test_logout_needs_csrf_and_clears_the_session(client, seeded):
    login(client, seeded.admin_token)
    page = client.get("/ui")
    assert client.post("/ui/logout", data={"csrf_token": "forged"}).status_code == 403
    assert client.get("/ui", follow_redirects=False).status_code == 200  # still signed in

    response = client.post("/ui/logout", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login"
    assert client.get("/ui", follow_redirects=False).status_code == 303
    assert client.get("/ui/data/overview").status_code == 401


def test_a_token_revoked_after_login_ends_the_session(client, seeded, engine):
    login(client, seeded.admin_token)
    with Session(engine) as session:
        row = session.exec(select(ApiToken).where(ApiToken.name == "ops-admin")).one()
        row.revoked_at = row.created_at
        session.add(row)
        session.commit()
    assert client.get("/ui", follow_redirects=False).headers["location"] == "/ui/login"


def test_pages_carry_a_strict_content_security_policy(client, seeded):
    login(client, seeded.admin_token)
    for path in ("/ui/login", "/ui"):
        csp = client.get(path).headers["content-security-policy"]
        assert "script-src 'self';" in csp
        assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    page = client.get("/ui").text
    assert "<script>" not in page and "onclick" not in page  # every script is an external file


def test_plotly_is_served_from_the_installed_package_with_a_long_cache(client):
    response = client.get("/ui/static/plotly.min.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "immutable" in response.headers["cache-control"] and "max-age=31536000" in response.headers["cache-control"]
    assert response.content == plotly.offline.get_plotlyjs().encode()


def test_console_assets_are_served_and_nothing_else(client):
    assert client.get("/ui/static/console.js").status_code == 200
    assert "text/css" in client.get("/ui/static/console.css").headers["content-type"]
    assert client.get("/ui/static/..%2Fconsole.py").status_code == 404
    assert client.get("/ui/static/nope.js").status_code == 404
