"""Throughput benchmark: prints figures and writes them as JSON.

    .venv/bin/python bench/throughput.py [--students 5000] [--seed 1] [--out FILE.json]

Two figures:
* domain core: commands per second through ``quota.apply_batch`` (pure, one process);
* end to end: records per second from Kafka through the worker (batches, PostgreSQL
  transactions, outbox) until every record is applied and the outbox relay has drained,
  on the local Kafka and PostgreSQL (or KAFKA_BOOTSTRAP / DATABASE_URL).

Figures depend on the machine; the JSON records it (cores) with the parameters.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from run import results_option, year_options  # noqa: E402

from producers.simulator import generate, publish_records  # noqa: E402
from quota import QuotaRules, StudentLedger, apply_batch  # noqa: E402
from schemas.declarations import DimonaDeclaration, DmfaDeclaration  # noqa: E402
from schemas.topics import DIMONA  # noqa: E402
from streams.messages import dimona_command, dmfa_command  # noqa: E402


def bench_domain(records: list) -> dict[str, float]:
    commands = []
    for r in records:
        received = datetime.fromtimestamp(r.timestamp_ms / 1000, UTC)
        try:
            if r.topic == DIMONA:
                d = DimonaDeclaration.model_validate_json(r.value)
                commands.append((d.worker.ssin, dimona_command(d, received)))
            else:
                w = DmfaDeclaration.model_validate_json(r.value)
                commands.append((w.worker.ssin, dmfa_command(w, received)))
        except ValueError:
            continue
    ledgers: dict[str, StudentLedger] = {}
    start = time.perf_counter()
    apply_batch(ledgers, commands, set(), QuotaRules())
    elapsed = time.perf_counter() - start
    return {
        "commands": len(commands),
        "seconds": round(elapsed, 3),
        "commands_per_second": round(len(commands) / elapsed),
    }


async def _drained(database_url: str, total: int) -> tuple[int, int]:
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        applied = await conn.fetchval("SELECT count(*) FROM applied_events")
        backlog = await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        return applied, backlog
    finally:
        await conn.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bench_end_to_end(records: list, partitions: int, separate_relay: bool) -> dict[str, float]:
    from infra import local_services
    from schemas.settings import Settings
    from streams.admin import prepare

    with (
        local_services(log=lambda _line: None) as services,
        tempfile.TemporaryDirectory() as workdir,
    ):
        prefix = f"bench{int(time.time())}."
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP": services.kafka_bootstrap,
            "DATABASE_URL": services.database_url,
            "STUDENTWORK_TOPIC_PREFIX": prefix,
            "STUDENTWORK_APP_ID": f"bench-{prefix}",
            "STUDENTWORK_PARTITIONS": str(partitions),
            "STUDENTWORK_INPUT_TIMESTAMP_TYPE": "CreateTime",
            "STUDENTWORK_WEB_PORT": str(_free_port()),
            "STUDENTWORK_LOG_LEVEL": "info",
            "STUDENTWORK_DEVELOPMENT": "true",
        }
        settings = Settings(
            kafka_bootstrap=services.kafka_bootstrap,
            database_url=services.database_url,
            topic_prefix=prefix,
            partitions=partitions,
            input_timestamp_type="CreateTime",
            development=True,
        )
        asyncio.run(prepare(settings))
        # Publish first, then start the worker: the figure is the worker's, not the producer's.
        t0 = time.perf_counter()
        asyncio.run(publish_records(records, settings))
        publish_seconds = time.perf_counter() - t0
        log = Path(os.environ.get("BENCH_WORKER_LOG", str(Path(workdir) / "worker.log")))
        commands = ["worker", "relay"] if separate_relay else ["worker"]
        with log.open("wb") as out:
            worker, *helpers = [
                subprocess.Popen(
                    [sys.executable, "-m", "infra", command],
                    env=env,
                    cwd=REPO,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
                for command in commands
            ]
        try:
            while "Worker]: Ready" not in log.read_text(errors="replace"):
                if worker.poll() is not None:
                    raise RuntimeError(log.read_text()[-3000:])
                time.sleep(0.1)
            start = time.perf_counter()
            while True:
                applied, backlog = asyncio.run(_drained(services.database_url, len(records)))
                if applied >= len(records) and backlog == 0:
                    break
                if worker.poll() is not None:
                    raise RuntimeError(f"worker exited: {log.read_text()[-3000:]}")
                time.sleep(0.25)
            elapsed = time.perf_counter() - start
        finally:
            for process in (worker, *helpers):
                process.terminate()
                process.wait(30)
    return {
        "records": len(records),
        "publish_seconds": round(publish_seconds, 2),
        "seconds": round(elapsed, 2),
        "records_per_second": round(len(records) / elapsed),
        "partitions": partitions,
        "separate_relay": separate_relay,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    year_options(parser, students=5000)
    parser.add_argument(
        "--skip-end-to-end", action="store_true", help="measure the domain core alone"
    )
    parser.add_argument(
        "--separate-relay",
        action="store_true",
        help="run the outbox relay as its own process (studentwork relay)",
    )
    results_option(parser, "throughput.json")
    args = parser.parse_args()

    records = list(generate(args.year, args.students, args.seed))
    print(f"simulated {len(records)} records for {args.students} students")
    result: dict[str, object] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "parameters": vars(args) | {"out": str(args.out)},
        "domain_core": bench_domain(records),
    }
    print(f"domain core: {result['domain_core']}")
    if not args.skip_end_to_end:
        result["end_to_end"] = bench_end_to_end(records, args.partitions, args.separate_relay)
        print(f"end to end:  {result['end_to_end']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
