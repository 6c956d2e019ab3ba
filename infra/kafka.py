"""A throwaway single-node Apache Kafka broker run straight from the official jars.

Used when no Docker engine is available. The jars come from Maven Central through
`infra/pom.xml` and are cached outside the repository, so only the first start pays for
the download; later starts only format a fresh log directory and launch the JVM.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from aiokafka.admin import AIOKafkaAdminClient

from infra._util import free_ports, port_open, tail
from infra.errors import MissingTool

KAFKA_VERSION = "4.4.0"
"""Newest Kafka 4.x on Maven Central as of writing; pass `version=` to use another."""

POM = Path(__file__).with_name("pom.xml")

_JAVA_HINT = "install a JDK 17 (Debian: openjdk-17-jre-headless)"

# Settings that make a one-node cluster usable: internal topics default to three
# replicas, which a single broker can never satisfy, and a single partition each keeps
# the first consumer-group join fast.
_BROKER_SETTINGS = {
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "1",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "1",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "auto.create.topics.enable": "true",
    "num.partitions": "1",
}

_LOG4J2 = """\
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
"""


def default_cache_dir(version: str = KAFKA_VERSION) -> Path:
    """Where the jars of one Kafka version are kept between runs (outside the repo)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "studentwork" / f"kafka-{version}"


class LocalKafka:
    """A combined broker+controller KRaft node on 127.0.0.1, in a temporary directory.

    `start()` blocks until a Kafka client can fetch cluster metadata and returns the
    bootstrap address; `stop()` shuts the JVM down and deletes all its data.
    `with LocalKafka() as bootstrap:` does both. `search_path` (os.pathsep-separated)
    replaces PATH when looking for `java` and `mvn`.

    For fault tests, `crash()` kills the JVM (SIGKILL, no clean shutdown) and keeps its
    data, `resume()` starts it again on the same ports and log directory, and
    `restart()` does both: clients see the same broker go away and come back.
    """

    def __init__(
        self,
        version: str = KAFKA_VERSION,
        *,
        cache_dir: Path | None = None,
        search_path: str | None = None,
        heap: str = "512m",
        startup_timeout: float = 120.0,
        log: Callable[[str], object] = lambda _: None,
    ) -> None:
        self.version = version
        self.cache_dir = cache_dir or default_cache_dir(version)
        self.search_path = search_path
        self.heap = heap
        self.startup_timeout = startup_timeout
        self._log = log
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._command: list[str] = []
        self._broker_port = 0

    @property
    def libs_dir(self) -> Path:
        return self.cache_dir / "libs"

    def start(self) -> str:
        """Start the broker and return its bootstrap address once it answers clients."""
        java = self._java()
        libs = self.resolve_jars()
        try:
            return self._launch(java, libs)
        except BaseException:
            self.stop()
            raise

    @property
    def bootstrap(self) -> str:
        """The bootstrap address of the started broker (the same across `restart()`)."""
        if not self._broker_port:
            raise RuntimeError("the broker was never started")
        return f"127.0.0.1:{self._broker_port}"

    def crash(self) -> None:
        """Kill the broker with SIGKILL, as a power cut would, keeping its data.

        No controlled shutdown: partitions are not moved, logs are not flushed, group
        members are not told; `resume()` then runs Kafka's recovery of unclean logs.
        Does nothing if the broker is not running.
        """
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def resume(self) -> str:
        """Start the crashed (or stopped) broker again on the same ports and data.

        Blocks until it answers clients, like `start()`, and returns the same bootstrap
        address. Only after `start()`, and before `stop()` deleted the data.
        """
        if self._workdir is None or not self._command:
            raise RuntimeError("resume() needs a broker started with start() and not stopped")
        if self._proc is not None and self._proc.poll() is None:
            return self.bootstrap
        self._spawn(self._workdir)
        return self.bootstrap

    def restart(self) -> str:
        """`crash()` then `resume()`: the broker dies without warning and comes back."""
        self.crash()
        return self.resume()

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and delete its data; safe to repeat."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
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

    def resolve_jars(self) -> Path:
        """Return the directory holding the broker jars, downloading them if needed.

        The marker file records a hash of the pom, so editing the pom (say, a logging
        version) refreshes the cache, while an unchanged pom never runs Maven again.
        """
        marker = self.cache_dir / "complete"
        stamp = f"{self.version} {hashlib.sha256(POM.read_bytes()).hexdigest()}"

        def complete() -> bool:
            return marker.is_file() and marker.read_text() == stamp and self.libs_dir.is_dir()

        if complete():
            return self.libs_dir
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # Brokers started side by side (the test processes of `pytest -n 2`) share the
        # cache: one downloads while the others wait, then finds the jars complete, and
        # none replaces a classpath another JVM is starting from.
        with (self.cache_dir / "lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if complete():
                return self.libs_dir
            return self._download_jars(marker, stamp)

    def _download_jars(self, marker: Path, stamp: str) -> Path:
        mvn = self._tool("mvn", "Maven not found: install Maven 3 (Debian: maven)")
        self._log(f"Downloading Kafka {self.version} jars with Maven (first run only)...")
        staging = Path(tempfile.mkdtemp(prefix="libs-", dir=self.cache_dir))
        try:
            command = [
                mvn, "-q", "-B", "-f", str(POM), f"-Dkafka.version={self.version}",
                "dependency:copy-dependencies", f"-DoutputDirectory={staging}",
            ]  # fmt: skip
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise RuntimeError(
                    f"Maven could not resolve Kafka {self.version}:\n"
                    + (result.stdout + result.stderr)[-4000:]
                )
            # Swap the complete set in only at the end, so an interrupted download never
            # leaves a half-filled classpath behind.
            marker.unlink(missing_ok=True)
            shutil.rmtree(self.libs_dir, ignore_errors=True)
            staging.rename(self.libs_dir)
            marker.write_text(stamp)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.libs_dir

    def _tool(self, name: str, missing: str) -> str:
        found = shutil.which(name, path=self.search_path)
        if found is None:
            raise MissingTool(missing)
        return found

    def _java(self) -> str:
        java = self._tool("java", f"Java 17 not found: {_JAVA_HINT}")
        # Kafka 4 brokers need Java 17; an older default JDK would otherwise fail later
        # with an UnsupportedClassVersionError buried in the broker log.
        out = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
        match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
        if match is not None:
            major = int(match[2]) if match[1] == "1" and match[2] else int(match[1])
            if major < 17:
                raise MissingTool(f"Java {major} is too old for Kafka 4: {_JAVA_HINT}")
        return java

    def _launch(self, java: str, libs: Path) -> str:
        self._workdir = workdir = Path(tempfile.mkdtemp(prefix="studentwork-kafka-"))
        broker_port, controller_port = free_ports(2)
        bootstrap = f"127.0.0.1:{broker_port}"

        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "listeners": f"PLAINTEXT://{bootstrap},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://{bootstrap}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
            "log.dirs": str(workdir / "data"),
            **_BROKER_SETTINGS,
        }
        config = workdir / "server.properties"
        config.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        log_file = workdir / "server.log"
        log_config = workdir / "log4j2.properties"
        log_config.write_text(_LOG4J2.format(log=log_file))

        jvm = [
            java,
            f"-Xmx{self.heap}",
            # A test broker lives for seconds to minutes: C2 compilation and G1's
            # background threads would mostly compete with it for CPU, roughly doubling
            # start-up time on a two-core machine.
            "-XX:TieredStopAtLevel=1",
            "-XX:+UseSerialGC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log_config}",
            "-cp",
            f"{libs}/*",
        ]
        format_storage = [
            *jvm, "kafka.tools.StorageTool", "format", "--standalone",
            "--cluster-id", _cluster_id(), "--config", str(config),
        ]  # fmt: skip
        formatted = subprocess.run(format_storage, capture_output=True, text=True, check=False)
        if formatted.returncode != 0:
            raise RuntimeError(
                f"Formatting Kafka storage failed:\n{formatted.stdout}{formatted.stderr}"
            )

        self._command = [*jvm, "kafka.Kafka", str(config)]
        self._broker_port = broker_port
        self._spawn(workdir)
        return bootstrap

    def _spawn(self, workdir: Path) -> None:
        """Run the broker JVM on the prepared configuration and wait until it answers.

        The console log is appended to, so after a `resume()` it tells the whole story.
        """
        with (workdir / "console.log").open("ab") as out:
            self._proc = subprocess.Popen(
                self._command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
        self._wait_until_ready(self._proc, self._broker_port, workdir)

    def _wait_until_ready(self, proc: subprocess.Popen[bytes], port: int, workdir: Path) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"Kafka broker exited with code {proc.returncode}:\n"
                    f"{tail(workdir / 'console.log')}\n{tail(workdir / 'server.log')}"
                )
            # The cheap port check comes first so the client is not asked to bootstrap
            # (and log a connection error) while nothing listens yet.
            if port_open(port) and _answers_metadata(f"127.0.0.1:{port}"):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Kafka broker not ready after {self.startup_timeout:.0f}s; "
                    f"end of {workdir / 'server.log'}:\n{tail(workdir / 'server.log')}"
                )
            time.sleep(0.2)


def _cluster_id() -> str:
    """A random cluster id in Kafka's format: 16 bytes, URL-safe base64, no padding."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        # Kafka's own generator avoids a leading dash, which command lines read as a flag.
        if not cluster_id.startswith("-"):
            return cluster_id


def _answers_metadata(bootstrap: str) -> bool:
    """Whether the broker returns cluster metadata that lists at least one broker.

    Runs the asyncio client on a private thread so that `start()` also works when called
    from code that already runs an event loop.
    """

    async def probe() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
            return bool(cluster["brokers"])
        finally:
            await admin.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        try:
            return pool.submit(lambda: asyncio.run(probe())).result()
        except Exception:
            return False
