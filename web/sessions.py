"""Console sessions: the browser's cookie holds a random id; the server keeps its SHA-256, the token
that signed in and when the session ends.

So a stolen cookie is worth one session, never an API token, and the server decides when it stops
working: logout deletes the row; revoking or expiring the token ends every session it opened, since
each request reads the token's row (no cache); and a session ends SESSION_MAX_AGE_S after sign-in
whatever the browser does with the cookie's Max-Age.
"""

import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlmodel import Session, select

from controlplane.auth import Principal, hash_token, principal_of
from controlplane.models import ApiToken, ConsoleSession

SESSION_MAX_AGE_S = 8 * 3600
# token_urlsafe(32) is 43 characters; a longer cookie is not one of ours and is not worth hashing.
_MAX_ID_LENGTH = 64


def start(session: Session, token_id: int, now: datetime) -> str:
    """Open a session for the token `token_id`; returns the raw id for the cookie, which is kept nowhere."""
    # Ended sessions are swept here rather than by a loop: it is one indexed delete, and sign-ins are
    # what add rows, so the table stays as small as the sessions that can still be used.
    session.exec(delete(ConsoleSession).where(ConsoleSession.expires_at <= now))
    raw_id = secrets.token_urlsafe(32)
    session.add(
        ConsoleSession(
            id_hash=hash_token(raw_id),  # 256 random bits, so an unsalted hash is as good as any
            token_id=token_id,
            created_at=now,
            expires_at=now + timedelta(seconds=SESSION_MAX_AGE_S),
        )
    )
    session.flush()
    return raw_id


def resolve(session: Session, raw_id: str, now: datetime) -> Principal | None:
    """Who the session `raw_id` signs in at `now`, or None: no such session (never started, or ended),
    the session has expired, or its token is revoked or expired."""
    if not raw_id or len(raw_id) > _MAX_ID_LENGTH:
        return None
    token = session.exec(
        select(ApiToken)
        .join(ConsoleSession, ConsoleSession.token_id == ApiToken.id)
        .where(ConsoleSession.id_hash == hash_token(raw_id), ConsoleSession.expires_at > now)
    ).first()
    return None if token is None else principal_of(token, now)


def end(session: Session, raw_id: str) -> None:
    """End the session `raw_id`; ending one that does not exist (already ended, expired and swept) is fine."""
    if raw_id and len(raw_id) <= _MAX_ID_LENGTH:
        session.exec(delete(ConsoleSession).where(ConsoleSession.id_hash == hash_token(raw_id)))
