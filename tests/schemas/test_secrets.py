"""No public secrets in production: development mode, and secrets read from files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from schemas.secrets import (
    DEVELOPMENT_ACCESS_CODE_SECRET,
    DEVELOPMENT_JWT_SECRET,
    DevelopmentSecretsError,
)
from schemas.settings import Settings

OWN_JWT_SECRET = "a-jwt-secret-of-our-own-0123456789abcdef0123"
OWN_ACCESS_CODE_SECRET = "an-access-code-secret-of-our-own-0123456789"
PEM = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings read the environment: none of the caller's STUDENTWORK_* may leak in."""
    for name in list(os.environ):
        if name.startswith("STUDENTWORK_"):
            monkeypatch.delenv(name)
    yield


def refusal(settings: Settings) -> DevelopmentSecretsError:
    with pytest.raises(DevelopmentSecretsError) as refused:
        settings.require_production_secrets()
    return refused.value


# ----------------------------------------------------------------- development secrets


def test_the_defaults_are_the_public_development_secrets() -> None:
    settings = Settings()
    assert settings.development is False
    assert settings.jwt_secret.get_secret_value() == DEVELOPMENT_JWT_SECRET
    assert settings.access_code_secret.get_secret_value() == DEVELOPMENT_ACCESS_CODE_SECRET


def test_the_development_jwt_secret_is_refused_outside_development_mode() -> None:
    error = refusal(Settings(access_code_secret=SecretStr(OWN_ACCESS_CODE_SECRET)))
    assert len(error.problems) == 1
    message = str(error)
    assert "JWT secret" in message
    for variable in [
        "STUDENTWORK_JWT_SECRET ",
        "STUDENTWORK_JWT_SECRET_FILE",
        "STUDENTWORK_JWT_ALGORITHM=RS256",
        "STUDENTWORK_JWT_PUBLIC_KEY",
        "STUDENTWORK_JWT_JWKS_URL",
        "STUDENTWORK_DEVELOPMENT=true",
    ]:
        assert variable in message, variable
    # The message names the variables, never the secret itself.
    assert DEVELOPMENT_JWT_SECRET not in message


def test_the_development_access_code_secret_is_refused_outside_development_mode() -> None:
    error = refusal(Settings(jwt_secret=SecretStr(OWN_JWT_SECRET)))
    assert len(error.problems) == 1
    message = str(error)
    assert "access-code secret" in message
    assert "STUDENTWORK_ACCESS_CODE_SECRET " in message
    assert "STUDENTWORK_ACCESS_CODE_SECRET_FILE" in message
    assert DEVELOPMENT_ACCESS_CODE_SECRET not in message


def test_both_development_secrets_are_reported_at_once() -> None:
    assert len(refusal(Settings()).problems) == 2


def test_development_mode_allows_the_development_secrets() -> None:
    Settings(development=True).require_production_secrets()


def test_development_mode_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDENTWORK_DEVELOPMENT", "true")
    Settings().require_production_secrets()
    monkeypatch.setenv("STUDENTWORK_DEVELOPMENT", "false")
    refusal(Settings())


def test_own_secrets_pass_outside_development_mode() -> None:
    Settings(
        jwt_secret=SecretStr(OWN_JWT_SECRET), access_code_secret=SecretStr(OWN_ACCESS_CODE_SECRET)
    ).require_production_secrets()


def test_the_jwt_secret_does_not_matter_when_tokens_use_public_keys() -> None:
    own_codes = SecretStr(OWN_ACCESS_CODE_SECRET)
    Settings(
        jwt_algorithm="RS256", jwt_public_key=PEM, access_code_secret=own_codes
    ).require_production_secrets()
    Settings(
        jwt_algorithm="ES256",
        jwt_jwks_url="https://idp.example/jwks.json",
        access_code_secret=own_codes,
    ).require_production_secrets()


def test_a_jwks_url_needs_a_public_key_algorithm() -> None:
    with pytest.raises(ValidationError, match="STUDENTWORK_JWT_ALGORITHM=RS256"):
        Settings(jwt_jwks_url="https://idp.example/jwks.json")
    with pytest.raises(ValidationError, match="http"):
        Settings(jwt_algorithm="RS256", jwt_jwks_url="file:///etc/passwd")


# ----------------------------------------------------------------------- secret files


def test_secrets_come_from_files_without_the_trailing_newline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "jwt").write_text(f"{OWN_JWT_SECRET}\n")
    (tmp_path / "codes").write_text(f"  {OWN_ACCESS_CODE_SECRET}\r\n")
    (tmp_path / "pem").write_text(f"{PEM}\n")
    monkeypatch.setenv("STUDENTWORK_JWT_SECRET_FILE", str(tmp_path / "jwt"))
    monkeypatch.setenv("STUDENTWORK_ACCESS_CODE_SECRET_FILE", str(tmp_path / "codes"))
    monkeypatch.setenv("STUDENTWORK_JWT_PUBLIC_KEY_FILE", str(tmp_path / "pem"))
    settings = Settings()
    assert settings.jwt_secret.get_secret_value() == OWN_JWT_SECRET
    # Only line breaks at the end go; other whitespace may be part of a secret.
    assert settings.access_code_secret.get_secret_value() == f"  {OWN_ACCESS_CODE_SECRET}"
    assert settings.jwt_public_key == PEM
    assert settings.jwt_secret_file == tmp_path / "jwt"
    settings.require_production_secrets()


def test_a_secret_file_can_be_given_as_an_argument(tmp_path: Path) -> None:
    (tmp_path / "jwt").write_text(OWN_JWT_SECRET)
    settings = Settings(jwt_secret_file=tmp_path / "jwt")
    assert settings.jwt_secret.get_secret_value() == OWN_JWT_SECRET


def test_a_file_holding_the_development_secret_is_still_refused(tmp_path: Path) -> None:
    (tmp_path / "jwt").write_text(DEVELOPMENT_JWT_SECRET + "\n")
    error = refusal(
        Settings(
            jwt_secret_file=tmp_path / "jwt", access_code_secret=SecretStr(OWN_ACCESS_CODE_SECRET)
        )
    )
    assert "JWT secret" in str(error)


def test_a_secret_and_its_file_together_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "jwt").write_text(OWN_JWT_SECRET)
    monkeypatch.setenv("STUDENTWORK_JWT_SECRET", "the-other-secret-set-directly-0123456789")
    monkeypatch.setenv("STUDENTWORK_JWT_SECRET_FILE", str(tmp_path / "jwt"))
    with pytest.raises(ValidationError) as refused:
        Settings()
    message = str(refused.value)
    assert "STUDENTWORK_JWT_SECRET or STUDENTWORK_JWT_SECRET_FILE, not both" in message
    # The error must not echo any secret it was given.
    assert "the-other-secret-set-directly" not in message
    assert OWN_JWT_SECRET not in message


def test_a_secret_argument_and_its_file_variable_together_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "codes").write_text(OWN_ACCESS_CODE_SECRET)
    monkeypatch.setenv("STUDENTWORK_ACCESS_CODE_SECRET_FILE", str(tmp_path / "codes"))
    with pytest.raises(ValidationError, match="not both"):
        Settings(access_code_secret=SecretStr(OWN_ACCESS_CODE_SECRET))


@pytest.mark.parametrize("what", ["missing", "directory", "empty", "not text"])
def test_an_unusable_secret_file_is_an_error_naming_its_path(
    what: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "secret"
    if what == "directory":
        path.mkdir()
    elif what == "empty":
        path.write_text("\n")
    elif what == "not text":
        path.write_bytes(b"\xff\xfe\x00secret")
    monkeypatch.setenv("STUDENTWORK_ACCESS_CODE_SECRET_FILE", str(path))
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert str(path) in str(refused.value)


def test_an_empty_file_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STUDENTWORK_JWT_SECRET_FILE", "")
    settings = Settings()
    assert settings.jwt_secret_file is None
    assert settings.jwt_secret.get_secret_value() == DEVELOPMENT_JWT_SECRET
