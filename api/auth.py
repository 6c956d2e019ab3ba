"""Signed tokens: who is calling, as the federal identity service vouches.

The project never sees passwords. In production the identity service issues a signed
JWT naming a student's SSIN or an employer's enterprise number (``sub``) and the role
(``role``); the API verifies its signature, issuer, audience and expiry with PyJWT.
The key is the identity service's, from its JWKS URL (chosen by the token's ``kid``) or
a configured PEM public key; for development ``studentwork token`` mints HS256 tokens
with the configured shared secret.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import jwt

from schemas.settings import Settings

logger = logging.getLogger(__name__)

#: Seconds the JWK set fetched from the JWKS URL is used before it is fetched again.
JWKS_LIFESPAN_SECONDS = 300.0

#: Seconds one fetch of the JWKS may take; a request waiting for it waits this long.
JWKS_TIMEOUT_SECONDS = 10.0


class Role(StrEnum):
    STUDENT = "student"
    EMPLOYER = "employer"
    AGENCY = "agency"
    #: Declares Dimona for the employers whose mandate it holds (``mandates`` table).
    SOCIAL_SECRETARIAT = "social_secretariat"


@dataclass(frozen=True)
class Principal:
    role: Role
    #: SSIN for a student; enterprise number for an employer, agency or social
    #: secretariat (``NSSO<number>`` for an employer known by its NSSO number only).
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


def jwk_client(settings: Settings) -> jwt.PyJWKClient:
    """The process's one client of ``settings.jwt_jwks_url``, with its cache.

    One per URL and process, not per request: the client caches the JWK set (refetched
    after :data:`JWKS_LIFESPAN_SECONDS`, or at once for a ``kid`` it does not know, at
    most once per cooldown), and a new client would fetch on every call.
    """
    if settings.jwt_jwks_url is None:
        raise ValueError("no JWKS URL configured (STUDENTWORK_JWT_JWKS_URL)")
    return _jwk_client(settings.jwt_jwks_url, settings.jwt_jwks_refresh_cooldown_seconds)


@functools.lru_cache(maxsize=8)
def _jwk_client(url: str, cooldown_seconds: float) -> jwt.PyJWKClient:
    # cache_keys stays off: its per-kid cache never expires, so a key the identity
    # service withdrew would stay trusted; the JWK set cache expires after its lifespan.
    return jwt.PyJWKClient(
        url,
        cache_keys=False,
        cache_jwk_set=True,
        lifespan=JWKS_LIFESPAN_SECONDS,
        timeout=JWKS_TIMEOUT_SECONDS,
        cooldown_duration=cooldown_seconds,
    )


def _verification_key(settings: Settings, token: str) -> jwt.PyJWK | str:
    """The key that must have signed ``token``, by the configured source of keys."""
    if settings.jwt_jwks_url is not None:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as error:
            raise InvalidToken(f"invalid token: {error}") from error
        if not isinstance(kid, str) or not kid:
            # Checked here so that a token without kid never costs a JWKS fetch.
            raise InvalidToken("invalid token: no key id (kid) in its header")
        try:
            return jwk_client(settings).get_signing_key(kid)
        except jwt.PyJWKClientConnectionError as error:
            logger.warning("JWKS %s unavailable: %s", settings.jwt_jwks_url, error)
            raise InvalidToken(
                "cannot verify the token now: the identity service's keys are unavailable"
            ) from error
        except jwt.PyJWTError as error:
            raise InvalidToken(f"invalid token: {error}") from error
    if settings.jwt_uses_shared_secret:
        return settings.jwt_secret.get_secret_value()
    if settings.jwt_public_key is None:
        raise InvalidToken(
            f"cannot verify {settings.jwt_algorithm} tokens: no public key configured"
        )
    return settings.jwt_public_key


def verify_token(settings: Settings, token: str) -> Principal:
    """The principal a token names, or :class:`InvalidToken` with the reason.

    With a JWKS URL this may fetch the identity service's keys over HTTP and block
    meanwhile; code on an event loop calls :func:`verify_token_async` instead.
    """
    key = _verification_key(settings, token)
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


async def verify_token_async(settings: Settings, token: str) -> Principal:
    """:func:`verify_token` without blocking the event loop.

    Only a JWKS URL involves network I/O (PyJWKClient uses blocking urllib); then the
    verification runs in a thread. Otherwise it is a little CPU and runs inline.
    """
    if settings.jwt_jwks_url is None:
        return verify_token(settings, token)
    return await asyncio.to_thread(verify_token, settings, token)


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise InvalidToken("missing Authorization header (Bearer token)")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidToken("Authorization must be 'Bearer <token>'")
    return token.strip()
