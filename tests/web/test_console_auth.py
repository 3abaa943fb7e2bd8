"""Signing in and out of the console: token check, server-side sessions, cookies, CSRF, the lockout
after repeated failures, redirects and page headers."""

import re
from datetime import timedelta

import plotly.offline
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from controlplane.auth import hash_token
from controlplane.models import ApiToken, ConsoleSession
from tests.web.conftest import NOW

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "the page has no CSRF field"
    return match.group(1)


def login(client, token: str):
    form = client.get("/ui/login")
    return client.post("/ui/login", data={"token": token, "csrf_token": csrf_of(form.text)}, follow_redirects=False)


def session_cookie(response) -> str:
    return response.cookies["hp_console"]


def replayed(app, cookie: str) -> TestClient:
    """Another browser (or a thief) sending a copy of `cookie`."""
    return TestClient(app, cookies={"hp_console": cookie})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


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


def test_the_cookie_holds_a_random_session_id_never_the_token(client, seeded, engine):
    first, second = login(client, seeded.admin_token), login(client, seeded.admin_token)
    assert first.status_code == second.status_code == 303
    for response in (first, second):
        assert all(seeded.admin_token not in c for c in response.headers.get_list("set-cookie"))
    ids = [session_cookie(first), session_cookie(second)]
    assert ids[0] != ids[1]  # a fresh random id per sign-in: nothing about it follows from the token
    with Session(engine) as session:
        rows = session.exec(select(ConsoleSession)).all()
        admin_id = session.exec(select(ApiToken.id).where(ApiToken.name == "ops-admin")).one()
    # Only a hash of the id is stored; signing in again from this browser replaced its first session.
    assert [(r.id_hash, r.token_id) for r in rows] == [(hash_token(ids[1]), admin_id)]
    assert ids[1] not in str(rows[0].model_dump())
    with replayed(client.app, ids[0]) as old, replayed(client.app, seeded.admin_token) as thief:
        assert old.get("/ui/data/overview").status_code == 401
        # The token itself, sent as the cookie, is nobody's session.
        assert thief.get("/ui/data/overview").status_code == 401
    assert client.get("/ui/data/overview").status_code == 200


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


def test_after_logout_a_copy_of_the_cookie_no_longer_works(client, seeded, engine):
    cookie = session_cookie(login(client, seeded.admin_token))
    with replayed(client.app, cookie) as copy:
        assert copy.get("/ui/data/overview").status_code == 200  # the copy works while the session lasts
        client.post("/ui/logout", data={"csrf_token": csrf_of(client.get("/ui").text)})
        assert copy.get("/ui/data/overview").status_code == 401
        assert copy.get("/ui", follow_redirects=False).headers["location"] == "/ui/login"
    with Session(engine) as session:
        assert session.exec(select(ConsoleSession)).all() == []


def test_the_server_ends_a_session_eight_hours_after_sign_in(client, seeded, clock):
    login(client, seeded.admin_token)
    clock.value = NOW + timedelta(hours=8) - timedelta(seconds=1)
    assert client.get("/ui/data/overview").status_code == 200
    clock.value = NOW + timedelta(hours=8)
    assert "hp_console" in client.cookies  # the browser still sends it; the server refuses it
    assert client.get("/ui/data/overview").status_code == 401
    assert client.get("/ui", follow_redirects=False).headers["location"] == "/ui/login"


def test_a_token_revoked_after_login_ends_the_session(client, seeded, engine):
    login(client, seeded.admin_token)
    with Session(engine) as session:
        row = session.exec(select(ApiToken).where(ApiToken.name == "ops-admin")).one()
        row.revoked_at = row.created_at
        session.add(row)
        session.commit()
    assert client.get("/ui", follow_redirects=False).headers["location"] == "/ui/login"


def test_revoking_the_token_through_the_api_ends_its_console_session_at_once(full_client, seeded):
    assert login(full_client, seeded.acme_token).status_code == 303
    assert full_client.get("/ui/data/overview").status_code == 200
    tokens = full_client.get("/api/v1/tokens", headers=bearer(seeded.admin_token)).json()["items"]
    acme = next(t for t in tokens if t["name"] == "acme-viewer")
    assert full_client.delete(f"/api/v1/tokens/{acme['id']}", headers=bearer(seeded.admin_token)).status_code == 204
    assert full_client.get("/ui/data/overview").status_code == 401
    assert full_client.get("/ui", follow_redirects=False).headers["location"] == "/ui/login"


def test_twenty_failed_sign_ins_lock_the_client_out_even_with_the_right_token(client, console_app, seeded, failures):
    for _ in range(20):
        assert login(client, "hp_guess").status_code == 401
    locked = login(client, "hp_guess")
    assert locked.status_code == 429
    # All 20 failures at 0 s leave the 60 s window at 60 s: int(0 + 60 - 0) + 1 = 61 (ratelimit.py rounds up).
    assert locked.headers["retry-after"] == "61"
    assert "Try again in 61 s" in locked.text
    right = login(client, seeded.admin_token)
    assert right.status_code == 429 and "hp_console" not in right.cookies
    assert client.get("/ui", follow_redirects=False).headers["location"] == "/ui/login"
    # The lockout is this client's alone.
    with TestClient(console_app, client=("10.0.0.2", 50000)) as other:
        assert login(other, seeded.admin_token).status_code == 303
    failures.clock.value = 60.0  # the failures have left the window
    assert login(client, seeded.admin_token).status_code == 303


def test_failed_sign_ins_and_failed_bearer_tokens_count_together(full_client, seeded):
    for _ in range(10):
        assert full_client.get("/api/v1/tenants", headers=bearer("hp_guess")).status_code == 401
    for _ in range(10):
        assert login(full_client, "hp_guess").status_code == 401
    # 20 failures in all, neither way alone reaching 20: both ways are now closed to this client.
    assert login(full_client, seeded.admin_token).status_code == 429
    api = full_client.get("/api/v1/tenants", headers=bearer(seeded.admin_token))
    assert api.status_code == 429 and int(api.headers["retry-after"]) > 0


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
