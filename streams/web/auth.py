"""Signed tokens: who is calling, as the federal identity service vouches.

The project never sees passwords. In production the identity service issues a signed
JWT naming a student's SSIN or an employer's enterprise number (``sub``) and the role
(``role``); the API verifies its signature, issuer, audience and expiry with PyJWT.
For development ``studentwork token`` mints HS256 tokens with the configured secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import jwt

from schemas.settings import Settings


class Role(StrEnum):
    STUDENT = "student"
    EMPLOYER = "employer"
    AGENCY = "agency"


@dataclass(frozen=True)
class Principal:
    role: Role
    #: SSIN for a student, enterprise number for an employer or agency.
    subject: str


class InvalidToken(Exception):
    """The token is missing, malformed, forged or expired (HTTP 401)."""


def mint_token(
    settings: Settings,
    role: Role,
    subject: str,
    *,
    ttl: timedelta | None = None,
    now: datetime | None = None,
) -> str:
    """A token as the identity service would issue it (HS256, development only)."""
    issued = now or datetime.now(UTC)
    expires = issued + (ttl or timedelta(minutes=settings.token_ttl_minutes))
    claims = {
        "sub": subject,
        "role": role.value,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": int(issued.timestamp()),
        "exp": int(expires.timestamp()),
    }
    return jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm="HS256")


def verify_token(settings: Settings, token: str) -> Principal:
    """The principal a token names, or :class:`InvalidToken` with the reason."""
    key = settings.jwt_public_key or settings.jwt_secret.get_secret_value()
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[settings.jwt_algorithm],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["sub", "role", "exp", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError as error:
        raise InvalidToken("token expired") from error
    except jwt.PyJWTError as error:
        raise InvalidToken(f"invalid token: {error}") from error
    try:
        role = Role(claims["role"])
    except ValueError as error:
        raise InvalidToken(f"unknown role {claims['role']!r}") from error
    return Principal(role, str(claims["sub"]))


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise InvalidToken("missing Authorization header (Bearer token)")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("Authorization must be 'Bearer <token>'")
    return token.strip()
