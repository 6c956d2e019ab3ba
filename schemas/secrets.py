"""The public development secrets, and secrets read from files.

The repository ships a JWT secret and an access-code secret so that the demo and the
tests run without any set-up. Everyone can read them, so a production deployment must
never use them: :meth:`schemas.settings.Settings.require_production_secrets` refuses
them unless development mode is on, and the worker calls it before it starts.

In production the secrets usually come from files mounted by Docker or Kubernetes
(``/run/secrets/...``); :func:`read_secret_file` reads one the way those platforms
write them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

#: Shared HS256 secret of development tokens; public, refused outside development mode.
DEVELOPMENT_JWT_SECRET = "dev-only-secret-do-not-use-in-production-0123456789"

#: Access-code secret of development; public, refused outside development mode.
DEVELOPMENT_ACCESS_CODE_SECRET = "dev-only-access-code-secret-0123456789abcdef"


class DevelopmentSecretsError(Exception):
    """The configuration uses public development secrets outside development mode.

    ``problems`` lists one sentence per offending secret, each naming the environment
    variables that fix it; ``str()`` of the error is the whole message for an operator.
    """

    def __init__(self, problems: Sequence[str], development_variable: str) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(
            "refusing to run with public development secrets outside development mode:\n"
            f"{lines}\n"
            f"(only for a local demo or tests: {development_variable}=true allows them)"
        )


class SecretFileError(ValueError):
    """A secret file cannot be used: missing, unreadable, not text, or empty.

    A ``ValueError`` so that pydantic reports it as a validation error of the settings,
    like any other bad configuration value.
    """


def read_secret_file(path: Path) -> str:
    """The secret stored in ``path``, without the trailing newline.

    Docker and Kubernetes secrets are files whose whole content is the value; tools that
    write them (``echo``, editors) usually end them with a newline that is not part of the
    secret, so trailing line breaks are dropped and nothing else. An empty file is refused:
    it is a mount that went wrong, and an empty key would sign anything.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise SecretFileError(f"cannot read secret file {str(path)!r}: {reason}") from error
    except UnicodeDecodeError as error:
        raise SecretFileError(f"secret file {str(path)!r} is not UTF-8 text") from error
    value = text.rstrip("\r\n")
    if not value:
        raise SecretFileError(f"secret file {str(path)!r} is empty")
    return value
