"""The console with its database gone: pages answer a readable 503 page, the data route 503
problem+json, both with Retry-After and neither naming the database's host."""

import pytest
from fastapi.testclient import TestClient

from controlplane.composition import service_app
from controlplane.db import make_engine, pool_size
from controlplane.settings import Settings
from tests.web.test_console_auth import csrf_of

# Nothing listens on port 1: every connection attempt is refused, as with PostgreSQL stopped.
DEAD_URL = "postgresql+psycopg://postgres@127.0.0.1:1/heteroplane"


@pytest.fixture
def dead_app():
    engine = make_engine(DEAD_URL, pool_size(2))
    yield service_app(engine, Settings(database_url=DEAD_URL, api_concurrency=2))
    engine.dispose()


def assert_says_nothing_of_the_driver(text: str) -> None:
    assert "127.0.0.1" not in text and "refused" not in text and "Traceback" not in text


def test_the_data_route_answers_503_problem_json_with_retry_after(dead_app):
    with TestClient(dead_app, cookies={"hp_console": "a-session-id"}) as client:
        response = client.get("/ui/data/overview")
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "2" and "database" in response.json()["detail"]
    assert_says_nothing_of_the_driver(response.text)


def test_pages_answer_a_503_error_page_with_retry_after(dead_app):
    with TestClient(dead_app, cookies={"hp_console": "a-session-id", "hp_csrf": "c"}) as signed_in:
        responses = [
            signed_in.get("/ui"),
            signed_in.get("/ui/login"),
            signed_in.post("/ui/logout", data={"csrf_token": "c"}),
        ]
    with TestClient(dead_app) as client:
        form = client.get("/ui/login")  # no session to look up: the form needs no database
        assert form.status_code == 200
        responses.append(client.post("/ui/login", data={"token": "hp_x", "csrf_token": csrf_of(form.text)}))
    for response in responses:
        assert response.status_code == 503, (response.request.url, response.text)
        assert response.headers["content-type"].startswith("text/html")
        assert response.headers["retry-after"] == "2"
        assert "Console unavailable" in response.text and "Try again in 2 s" in response.text
        assert_says_nothing_of_the_driver(response.text)


def test_a_sign_in_refused_by_the_outage_does_not_count_as_a_failure(dead_app):
    with TestClient(dead_app) as client:
        form = client.get("/ui/login")
        for _ in range(21):
            client.post("/ui/login", data={"token": "hp_x", "csrf_token": csrf_of(form.text)})
    assert dead_app.state.auth_failures.retry_after("testclient") is None
