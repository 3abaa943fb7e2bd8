"""Console sessions on the server (web/sessions.py): what is stored, and every way a session ends."""

from datetime import timedelta

from sqlmodel import select

from controlplane.auth import hash_token, mint_token
from controlplane.models import ApiToken, ConsoleSession, Role
from tests.web.conftest import NOW
from web import sessions

EIGHT_HOURS = timedelta(hours=8)
SECOND = timedelta(seconds=1)


def token_named(session, name: str) -> ApiToken:
    return session.exec(select(ApiToken).where(ApiToken.name == name)).one()


def stored(session) -> list[ConsoleSession]:
    return session.exec(select(ConsoleSession).order_by(ConsoleSession.id)).all()


def test_only_a_hash_of_the_random_id_is_stored(session, seeded):
    admin = token_named(session, "ops-admin")
    first = sessions.start(session, admin.id, NOW)
    second = sessions.start(session, admin.id, NOW)
    session.commit()
    assert first != second  # random per sign-in, so nothing about it follows from the token
    assert len(first) >= 43  # token_urlsafe(32): 256 random bits
    rows = stored(session)
    assert [r.id_hash for r in rows] == [hash_token(first), hash_token(second)]
    assert all(first not in str(r.model_dump()) and second not in str(r.model_dump()) for r in rows)
    assert all(r.token_id == admin.id and r.expires_at == NOW + EIGHT_HOURS for r in rows)


def test_a_session_ends_eight_hours_after_sign_in_on_the_server(session, seeded):
    raw_id = sessions.start(session, token_named(session, "ops-admin").id, NOW)
    principal = sessions.resolve(session, raw_id, NOW + EIGHT_HOURS - SECOND)
    assert principal is not None and principal.name == "ops-admin" and principal.tenant_id is None
    assert sessions.resolve(session, raw_id, NOW + EIGHT_HOURS) is None


def test_a_session_resolves_to_its_tokens_role_and_tenant(session, seeded):
    raw_id = sessions.start(session, token_named(session, "acme-viewer").id, NOW)
    principal = sessions.resolve(session, raw_id, NOW)
    assert (principal.name, principal.role, principal.tenant_id) == ("acme-viewer", Role.viewer, seeded.acme_id)


def test_revoking_or_expiring_the_token_ends_its_sessions(session, seeded):
    short, _ = mint_token(session, "short", Role.viewer, expires_at=NOW + timedelta(hours=1))
    raw_id = sessions.start(session, short.id, NOW)
    assert sessions.resolve(session, raw_id, NOW + timedelta(hours=1) - SECOND) is not None
    # The session itself would last 7 more hours; the token's expiry ends it first.
    assert sessions.resolve(session, raw_id, NOW + timedelta(hours=1)) is None

    admin = token_named(session, "ops-admin")
    raw_id = sessions.start(session, admin.id, NOW)
    assert sessions.resolve(session, raw_id, NOW) is not None
    admin.revoked_at = NOW
    session.add(admin)
    session.flush()
    assert sessions.resolve(session, raw_id, NOW) is None


def test_ending_a_session_deletes_it_and_no_other(session, seeded):
    admin_id = token_named(session, "ops-admin").id
    ended, kept = sessions.start(session, admin_id, NOW), sessions.start(session, admin_id, NOW)
    sessions.end(session, ended)
    assert sessions.resolve(session, ended, NOW) is None
    assert sessions.resolve(session, kept, NOW) is not None
    assert [r.id_hash for r in stored(session)] == [hash_token(kept)]
    sessions.end(session, ended)  # ending it again, or ending nothing, changes nothing
    sessions.end(session, "")
    assert len(stored(session)) == 1


def test_starting_a_session_sweeps_the_expired_ones(session, seeded):
    admin_id = token_named(session, "ops-admin").id
    sessions.start(session, admin_id, NOW)
    live = sessions.start(session, admin_id, NOW + timedelta(hours=1))
    # At NOW + 8 h the first has expired (expires_at == now) and goes; the second has an hour left.
    new = sessions.start(session, admin_id, NOW + EIGHT_HOURS)
    assert [r.id_hash for r in stored(session)] == [hash_token(live), hash_token(new)]


def test_unknown_ids_resolve_to_nobody(session, seeded):
    sessions.start(session, token_named(session, "ops-admin").id, NOW)
    assert sessions.resolve(session, "", NOW) is None
    assert sessions.resolve(session, "not-a-session-id-but-43-characters-long-xyz", NOW) is None
    # The token itself is no session id: the cookie and the API credential are different secrets.
    assert sessions.resolve(session, seeded.admin_token, NOW) is None
