"""Tokens verified with the identity service's JWKS: real HTTP, real keys, real PyJWT.

A local ``http.server`` in a thread plays the identity service: it publishes a JWK set
of RSA keys made with ``cryptography`` and counts how often it is fetched, so the tests
see PyJWKClient's cache and its refetch on an unknown ``kid`` (key rotation).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from api.auth import (
    InvalidToken,
    Principal,
    Role,
    jwk_client,
    mint_token,
    verify_token,
    verify_token_async,
)
from schemas.settings import Settings
from tests.support import STUDENT, ApiProcess, Pipeline, WorkerProcess

ISSUER = AUDIENCE = "studentwork"


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


def token(
    key: rsa.RSAPrivateKey | str,
    kid: str | None,
    *,
    subject: str = STUDENT,
    role: str = "student",
    algorithm: str = "RS256",
) -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": subject,
        "role": role,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=10)).timestamp()),
    }
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


class IdentityService:
    """Serves a JWK set at a path of its own and counts the fetches.

    The path is unique so that no two servers ever share a URL, and with it the
    process-wide PyJWKClient that caches the set of that URL.
    """

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        #: Set at the first fetch.
        self.fetched = threading.Event()
        #: When set, a fetch waits for it (up to 10 s), then answers 503 if still unset.
        self.hold: threading.Event | None = None
        self.path = f"/{uuid.uuid4().hex}/jwks.json"
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path != service.path:
                    self.send_error(404)
                    return
                service.fetches += 1
                service.fetched.set()
                if service.hold is not None and not service.hold.wait(10):
                    self.send_error(503)
                    return
                body = json.dumps({"keys": service.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{self.path}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def publish(self, *keys: tuple[rsa.RSAPrivateKey, str]) -> None:
        self.keys = [public_jwk(key, kid) for key, kid in keys]

    def __enter__(self) -> IdentityService:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture(scope="module")
def key1() -> rsa.RSAPrivateKey:
    return rsa_key()


@pytest.fixture(scope="module")
def key2() -> rsa.RSAPrivateKey:
    return rsa_key()


@pytest.fixture(scope="module")
def attacker() -> rsa.RSAPrivateKey:
    return rsa_key()


@pytest.fixture
def identity(key1: rsa.RSAPrivateKey) -> Iterator[IdentityService]:
    with IdentityService() as service:
        service.publish((key1, "key-1"))
        yield service


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("STUDENTWORK_"):
            monkeypatch.delenv(name)


def jwks_settings(identity: IdentityService, cooldown: float = 0) -> Settings:
    """RS256 from the JWKS; a cooldown of 0 lets a new kid be fetched at once."""
    return Settings(
        jwt_algorithm="RS256",
        jwt_jwks_url=identity.url,
        jwt_jwks_refresh_cooldown_seconds=cooldown,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )


def test_a_token_signed_by_a_published_key_verifies(
    identity: IdentityService, key1: rsa.RSAPrivateKey
) -> None:
    settings = jwks_settings(identity)
    principal = verify_token(settings, token(key1, "key-1"))
    assert principal == Principal(Role.STUDENT, STUDENT)
    employer = verify_token(settings, token(key1, "key-1", subject="0123456749", role="employer"))
    assert employer == Principal(Role.EMPLOYER, "0123456749")
    # The second token used the cached set.
    assert identity.fetches == 1


def test_one_client_per_jwks_url_and_process(identity: IdentityService) -> None:
    assert jwk_client(jwks_settings(identity)) is jwk_client(jwks_settings(identity))


def test_after_rotation_a_token_of_the_new_key_verifies(
    identity: IdentityService, key1: rsa.RSAPrivateKey, key2: rsa.RSAPrivateKey
) -> None:
    settings = jwks_settings(identity)
    verify_token(settings, token(key1, "key-1"))
    identity.publish((key1, "key-1"), (key2, "key-2"))
    # key-2 is not in the cached set: PyJWKClient fetches the set again.
    assert verify_token(settings, token(key2, "key-2")) == Principal(Role.STUDENT, STUDENT)
    assert identity.fetches == 2
    assert verify_token(settings, token(key1, "key-1")).subject == STUDENT
    assert identity.fetches == 2


def test_the_refresh_cooldown_stops_unknown_kids_from_refetching(
    identity: IdentityService, key1: rsa.RSAPrivateKey, key2: rsa.RSAPrivateKey
) -> None:
    settings = jwks_settings(identity, cooldown=3600)
    verify_token(settings, token(key1, "key-1"))
    identity.publish((key1, "key-1"), (key2, "key-2"))
    for _ in range(3):
        with pytest.raises(InvalidToken, match="key-2"):
            verify_token(settings, token(key2, "key-2"))
    assert identity.fetches == 1


def test_forged_tokens_are_refused(
    identity: IdentityService, key1: rsa.RSAPrivateKey, attacker: rsa.RSAPrivateKey
) -> None:
    settings = jwks_settings(identity)
    verify_token(settings, token(key1, "key-1"))
    forged = {
        "signed by another key under a published kid": token(attacker, "key-1"),
        "signed by another key under its own kid": token(attacker, "attacker"),
        "HS256 keyed with the published key's modulus": token(
            str(public_jwk(key1, "key-1")["n"]), "key-1", algorithm="HS256"
        ),
        "HS256 with the development secret": mint_token(Settings(), Role.STUDENT, STUDENT),
        "unsigned": jwt.encode(
            {"sub": STUDENT, "role": "student"}, None, algorithm="none", headers={"kid": "key-1"}
        ),
        "garbage": "not.a.token",
    }
    for what, value in forged.items():
        with pytest.raises(InvalidToken):
            verify_token(settings, value)
            pytest.fail(what)


def test_a_token_without_kid_is_refused_without_fetching(
    identity: IdentityService, key1: rsa.RSAPrivateKey
) -> None:
    with pytest.raises(InvalidToken, match="kid"):
        verify_token(jwks_settings(identity), token(key1, None))
    assert identity.fetches == 0


def test_an_unreachable_identity_service_refuses_the_token(key1: rsa.RSAPrivateKey) -> None:
    with IdentityService() as gone:
        settings = jwks_settings(gone)
    with pytest.raises(InvalidToken, match="unavailable"):
        verify_token(settings, token(key1, "key-1"))


async def test_verifying_from_async_code_leaves_the_event_loop_free(
    identity: IdentityService, key1: rsa.RSAPrivateKey
) -> None:
    """The fetch is held until the event loop releases it, so a blocked loop fails."""
    identity.hold = threading.Event()
    pending = asyncio.create_task(verify_token_async(jwks_settings(identity), token(key1, "key-1")))
    # Waiting in a thread: the loop stays free to run the verification meanwhile.
    assert await asyncio.to_thread(identity.fetched.wait, 30)
    identity.hold.set()
    assert await pending == Principal(Role.STUDENT, STUDENT)


def test_hs256_and_pem_public_keys_still_verify(key1: rsa.RSAPrivateKey) -> None:
    hs = Settings()
    assert verify_token(hs, mint_token(hs, Role.STUDENT, STUDENT)).subject == STUDENT
    pem = key1.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    rs = Settings(jwt_algorithm="RS256", jwt_public_key=pem.decode())
    assert verify_token(rs, token(key1, None)).subject == STUDENT
    with pytest.raises(InvalidToken):
        verify_token(rs, mint_token(hs, Role.STUDENT, STUDENT))
    with pytest.raises(InvalidToken, match="no public key"):
        verify_token(Settings(jwt_algorithm="RS256"), token(key1, None))


# ------------------------------------------------------------------- through the API


@pytest.mark.integration
async def test_the_api_verifies_tokens_with_the_jwks(
    kafka_bootstrap: str,
    database_url: str,
    tmp_path: Path,
    key1: rsa.RSAPrivateKey,
    key2: rsa.RSAPrivateKey,
    attacker: rsa.RSAPrivateKey,
) -> None:
    with IdentityService() as identity:
        identity.publish((key1, "key-1"))
        pipeline = Pipeline(
            kafka_bootstrap,
            database_url,
            extra_env={
                "STUDENTWORK_JWT_ALGORITHM": "RS256",
                "STUDENTWORK_JWT_JWKS_URL": identity.url,
                "STUDENTWORK_JWT_JWKS_REFRESH_COOLDOWN_SECONDS": "0",
            },
        )
        with (
            WorkerProcess(pipeline, tmp_path / "worker.log"),
            ApiProcess(pipeline, tmp_path / "api.log"),
        ):
            async with api(pipeline) as http:

                async def status(value: str) -> int:
                    response = await http.get(
                        "/v1/me/balance", headers={"Authorization": f"Bearer {value}"}
                    )
                    return response.status_code

                assert await status(token(key1, "key-1")) == 200
                assert await status(token(attacker, "key-1")) == 401
                assert await status(token(key1, None)) == 401
                employer = token(key1, "key-1", subject="0123456749", role="employer")
                assert await status(employer) == 403
                assert await status(token(key2, "key-2")) == 401
                identity.publish((key1, "key-1"), (key2, "key-2"))
                assert await status(token(key2, "key-2")) == 200
                # Development tokens are not the identity service's.
                assert await status(mint_token(Settings(), Role.STUDENT, STUDENT)) == 401


def api(pipeline: Pipeline) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=pipeline.api_url)
