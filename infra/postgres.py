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
from collections.abc import Mapping
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
# What `crash_safe=True` changes: a commit returns only once its WAL is written (to the
# OS, which survives a crash of the server; fsync stays off), so `crash()` loses no
# committed transaction. With asynchronous commit, an immediate stop drops the last
# few hundred milliseconds of commits that clients were told had succeeded.
_CRASH_SAFE_SETTINGS = {"synchronous_commit": "on"}


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

    For fault tests, `crash()` stops the server the way a crash would (`pg_ctl stop -m
    immediate`: no checkpoint, every connection cut) and keeps its data, `resume()`
    starts it again on the same port and data directory (running crash recovery), and
    `restart()` does both. Pass `crash_safe=True` for that: commits then wait for their
    WAL to be written, so a crash loses no transaction a client saw committed (as on a
    real server), at some cost in speed.
    """

    def __init__(
        self,
        *,
        search_path: str | None = None,
        startup_timeout: int = 60,
        crash_safe: bool = False,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        self.search_path = search_path
        self.startup_timeout = startup_timeout
        self.crash_safe = crash_safe
        #: More server settings, as postgresql.conf writes them: {"shared_buffers": "'4GB'"}.
        self.settings = dict(settings or {})
        self._bindir: Path | None = None
        self._workdir: Path | None = None
        self._run_as: list[str] = []
        self._dsn: str | None = None

    def start(self) -> str:
        """Create and start the cluster; return its DSN once it accepts connections."""
        self._bindir = find_bindir(self.search_path)
        self._run_as = _run_as_prefix()
        try:
            return self._launch()
        except BaseException:
            self.stop()
            raise

    @property
    def dsn(self) -> str:
        """The DSN of the started server (the same across `restart()`)."""
        if self._dsn is None:
            raise RuntimeError("the server was never started")
        return self._dsn

    def crash(self) -> None:
        """Stop the server without a shutdown checkpoint, keeping its data.

        `pg_ctl stop -m immediate` makes every backend exit at once: clients lose their
        connections mid-transaction, and the next start runs crash recovery from the WAL.
        Does nothing if the server is not running.
        """
        data = self._data_dir()
        if self._running(data):
            self._run("pg_ctl", "stop", "-D", str(data), "-m", "immediate", "-w")

    def resume(self) -> str:
        """Start the crashed (or stopped) server again on the same port and data.

        Returns the same DSN as `start()` once it accepts connections (after recovery).
        """
        data = self._data_dir()
        if not self._running(data):
            self._start_server(data)
        return self.dsn

    def restart(self) -> str:
        """`crash()` then `resume()`: the server dies without warning and comes back."""
        self.crash()
        return self.resume()

    def _running(self, data: Path) -> bool:
        """Whether a server runs on `data` (`pg_ctl status`, which ignores a stale pid file)."""
        return self._run("pg_ctl", "status", "-D", str(data), check=False).returncode == 0

    def _data_dir(self) -> Path:
        if self._workdir is None or self._bindir is None:
            raise RuntimeError("needs a server started with start() and not stopped")
        return self._workdir / "data"

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its data; safe to repeat."""
        workdir = self._workdir
        if workdir is None:
            return
        data = workdir / "data"
        if self._bindir is not None and (data / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-D", str(data), "-m", "fast", "-w", check=False)
        self._workdir = None
        self._dsn = None
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
            **(_CRASH_SAFE_SETTINGS if self.crash_safe else {}),
            **self.settings,
            "listen_addresses": "'127.0.0.1'",
            "port": str(port),
            "unix_socket_directories": f"'{workdir}'",
        }
        # Appended rather than passed with `pg_ctl -o`, which goes through a shell.
        with (data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        if self._run_as:
            shutil.chown(data / "postgresql.conf", user="postgres", group="postgres")

        self._start_server(data)
        self._dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        return self._dsn

    def _start_server(self, data: Path) -> None:
        """`pg_ctl start` on an initialised data directory; waits until it is ready."""
        assert self._workdir is not None
        self._run(
            "pg_ctl", "start", "-D", str(data), "-l", str(self._workdir / "server.log"),
            "-w", "-t", str(self.startup_timeout),
        )  # fmt: skip

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
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
        return result


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
