"""A throwaway PostgreSQL cluster built with the locally installed server binaries.

Used when no Docker engine is available. Each instance runs `initdb` into a fresh
temporary directory, serves on a free port of 127.0.0.1 with password-less access for
the `postgres` superuser, and deletes everything on `stop()`.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from infra._util import free_ports
from infra.errors import MissingTool

_MISSING = "PostgreSQL server not found: install the Debian package postgresql"

# Durability is pointless for a cluster that is deleted afterwards, and skipping it
# makes CREATE DATABASE and commits much faster.
_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


def find_bindir(search_path: str | None = None) -> Path:
    """Directory holding `initdb` and `pg_ctl`.

    Looks in `search_path` (os.pathsep-separated) if given; otherwise in PATH and then in
    Debian's versioned /usr/lib/postgresql/<major>/bin, newest first, since Debian does
    not put the server binaries on PATH.
    """
    if search_path is not None:
        candidates = search_path.split(os.pathsep)
    else:
        debian = sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)],
            reverse=True,
        )
        candidates = [*os.environ.get("PATH", "").split(os.pathsep), *map(str, debian)]
    for directory in filter(None, candidates):
        pg_ctl = Path(directory, "pg_ctl")
        if os.access(pg_ctl, os.X_OK) and os.access(Path(directory, "initdb"), os.X_OK):
            # Resolve symlinks (e.g. /usr/local/bin/pg_ctl) so initdb and pg_ctl are
            # guaranteed to come from the same installation.
            return pg_ctl.resolve().parent
    raise MissingTool(_MISSING)


class LocalPostgres:
    """A private PostgreSQL server on 127.0.0.1 whose data lives in a temporary directory.

    `start()` returns a DSN for the `postgres` superuser and database; `stop()` shuts the
    server down and deletes its data; `with LocalPostgres() as dsn:` does both. PostgreSQL
    refuses to run as root, so under root the cluster is owned and run by the `postgres`
    OS user.
    """

    def __init__(self, *, search_path: str | None = None, startup_timeout: int = 60) -> None:
        self.search_path = search_path
        self.startup_timeout = startup_timeout
        self._bindir: Path | None = None
        self._workdir: Path | None = None
        self._run_as: list[str] = []

    def start(self) -> str:
        """Create and start the cluster; return its DSN once it accepts connections."""
        self._bindir = find_bindir(self.search_path)
        self._run_as = _run_as_prefix()
        try:
            return self._launch()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its data; safe to repeat."""
        workdir = self._workdir
        if workdir is None:
            return
        data = workdir / "data"
        if self._bindir is not None and (data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-D", str(data), "-m", "fast", "-w", check=False)
        self._workdir = None
        shutil.rmtree(workdir, ignore_errors=True)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _launch(self) -> str:
        self._workdir = workdir = Path(tempfile.mkdtemp(prefix="studentwork-pg-"))
        if self._run_as:
            shutil.chown(workdir, user="postgres", group="postgres")
        data = workdir / "data"
        (port,) = free_ports(1)

        self._run(
            "initdb", "-D", str(data), "-A", "trust", "-U", "postgres",
            "--encoding", "UTF8", "--locale", "C", "--no-sync", "--no-instructions",
        )  # fmt: skip
        settings = {
            **_SETTINGS,
            "listen_addresses": "'127.0.0.1'",
            "port": str(port),
            "unix_socket_directories": f"'{workdir}'",
        }
        # Appended rather than passed with `pg_ctl -o`, which goes through a shell.
        with (data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        if self._run_as:
            shutil.chown(data / "postgresql.conf", user="postgres", group="postgres")

        self._run(
            "pg_ctl", "start", "-D", str(data), "-l", str(workdir / "server.log"),
            "-w", "-t", str(self.startup_timeout),
        )  # fmt: skip
        return f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        assert self._bindir is not None and self._workdir is not None
        result = subprocess.run(
            [*self._run_as, str(self._bindir / tool), *args],
            capture_output=True,
            text=True,
            # The postgres user may not be allowed into the caller's working directory.
            cwd=self._workdir,
            check=False,
        )
        if check and result.returncode != 0:
            log = self._workdir / "server.log"
            server_log = log.read_text(errors="replace")[-4000:] if log.exists() else ""
            raise RuntimeError(
                f"{tool} {' '.join(args)} failed:\n{result.stdout}{result.stderr}{server_log}"
            )


def _run_as_prefix() -> list[str]:
    """Command prefix that drops root privileges to the `postgres` user, if needed."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        runuser = None
    if runuser is None:
        raise MissingTool(
            "PostgreSQL cannot run as root and there is no 'postgres' user with runuser: "
            "install the Debian package postgresql or run as a normal user"
        )
    return [runuser, "-u", "postgres", "--"]
