"""`heteroplane token create`: the token alone on stdout, and on stderr the database it went into,
never with its password."""

import os
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import URL, make_url
from sqlmodel import Session

from controlplane.auth import authenticate
from controlplane.db import display_url, make_engine
from controlplane.models import Role

PASSWORD = "s3cret-pw-Xq9"


def token_create(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HETEROPLANE_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "controlplane.cli", "token", "create", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_token_create_says_which_database_it_wrote_to_without_its_password(empty_database_url, db_backend):
    url = empty_database_url
    if db_backend == "postgresql":  # the test server trusts local connections, so any password connects
        url = make_url(url).set(password=PASSWORD).render_as_string(hide_password=False)
    done = token_create(url, "--name", "ci", "--role", "operator")
    assert done.returncode == 0, done.stdout + done.stderr
    (token,) = done.stdout.splitlines()  # nothing but the token, for TOKEN=$(heteroplane token create ...)
    where = make_url(url)
    if db_backend == "postgresql":
        shown = f"postgresql+psycopg://{where.username}:***@{where.host}:{where.port}/{where.database}"
    else:
        shown = f"sqlite:///{where.database}"
    assert f"token 'ci' (operator) written to {shown}" in done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    engine = make_engine(url)
    with Session(engine) as session:
        assert authenticate(session, token).role == Role.operator
    engine.dispose()


@given(password=st.text(st.characters(codec="ascii", exclude_categories=["Cc"]), min_size=1, max_size=40),
       in_query=st.booleans())
def test_a_displayed_url_names_the_database_and_never_holds_the_password(password, in_query):
    if in_query:  # libpq also takes the password as a query parameter
        url = URL.create("postgresql+psycopg", "hp", None, "db.internal", 5432, "heteroplane",
                         query={"password": password, "sslmode": "require"})
    else:
        url = URL.create("postgresql+psycopg", "hp", password, "db.internal", 5432, "heteroplane")
    shown = display_url(url.render_as_string(hide_password=False))
    assert shown == f"postgresql+psycopg://hp{'' if in_query else ':***'}@db.internal:5432/heteroplane"
