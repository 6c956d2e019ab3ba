"""Where PostgreSQL's time goes in the pipeline: ``pg_stat_statements`` per run.

    .venv/bin/python bench/statements.py [--students 5000] [--runs 1 2 1] [--other TREE]
        [--top 12] [--out FILE.json]

Starts Kafka and a PostgreSQL server with ``pg_stat_statements`` loaded, publishes one
simulated year and runs the pipeline once per entry of ``--runs`` (the number of worker
processes, as ``bench/run.py`` runs them: from the records on Kafka to an empty outbox).
For each run it prints the records per second, the worker's and the whole PostgreSQL
server's CPU per record, and the statements that took most of the server's time, in
microseconds per record, with their calls, rows and buffer hits.

``--other TREE`` names a second checkout (``git worktree add /tmp/before HEAD~1``); an
entry of ``--runs`` ending in ``o`` (``1o``) runs the workers from it, so two commits are
compared on the same server, broker and year, alternated in one run. Only ratios within
one run mean anything on a shared machine; a statement whose plan PostgreSQL chose
differently between runs shows here as a figure that moves from run to run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncpg
from run import (
    REPO,
    Bench,
    bench_pipeline,
    cores_busy,
    default_shared_buffers,
    results_option,
    year_options,
)

from producers.simulator import generate

_TOP = """
SELECT calls, total_exec_time, rows, shared_blks_hit,
       regexp_replace(query, '\\s+', ' ', 'g') AS query
FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT $1
"""


async def _execute(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


def measure(bench: Bench, workers: int, repo: Path, top: int) -> dict[str, Any]:
    """One pipeline run from a reset of the statistics; its figures and top statements."""
    asyncio.run(_execute(bench.admin_dsn, "SELECT pg_stat_statements_reset()"))
    run = bench_pipeline(bench, workers, repo=repo)
    records = run["records"]
    rows = asyncio.run(_execute(bench.admin_dsn, _TOP, top))
    total = asyncio.run(
        _execute(bench.admin_dsn, "SELECT sum(total_exec_time) AS ms FROM pg_stat_statements")
    )[0]["ms"]
    return {
        "workers": workers,
        "repo": str(repo),
        "per_second": run["per_second"],
        "worker_cpu_ms_per_record": run["worker_cpu_ms_per_record"],
        "database_cpu_ms_per_record": run["database_cpu_ms_per_record"],
        "statements_us_per_record": round(1000 * total / records, 1),
        # Cores the run kept busy (workers with their relays, PostgreSQL, the broker):
        # a run of N workers over one of 1 is at most the cores over one's figure.
        "cores_busy": round(cores_busy(run), 2),
        "worker_rss_mb": run["worker_rss_mb"],
        "worker_peak_rss_mb": run["worker_peak_rss_mb"],
        "worker_rss_mb_by_quarter": run["worker_rss_mb_by_quarter"],
        "top": [
            {
                "us_per_record": round(1000 * r["total_exec_time"] / records, 1),
                "calls": r["calls"],
                "rows": r["rows"],
                "hits_per_record": round(r["shared_blks_hit"] / records, 1),
                "query": r["query"][:160],
            }
            for r in rows
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    year_options(parser, students=5000)
    parser.add_argument(
        "--runs",
        nargs="+",
        default=["1", "2", "1"],
        metavar="N[o]",
        help="worker processes of each run; N followed by o runs them from --other",
    )
    parser.add_argument("--other", type=Path, help="a second checkout, for the runs ending in o")
    parser.add_argument("--top", type=int, default=12, help="statements shown per run")
    results_option(parser, "statements.json")
    args = parser.parse_args()
    runs = [(int(run.rstrip("o")), run.endswith("o")) for run in args.runs]
    if any(other for _, other in runs) and args.other is None:
        parser.error("a run ending in o needs --other TREE")

    from infra import local_services

    records = list(generate(args.year, args.students, args.seed))
    print(f"simulated {len(records):,} records for {args.students:,} students", flush=True)
    settings = {
        "shared_buffers": f"'{default_shared_buffers()}'",
        "shared_preload_libraries": "'pg_stat_statements'",
        "pg_stat_statements.track": "'all'",  # the foreign key checks' queries too
    }
    results = []
    with local_services(log=lambda _line: None, postgres_settings=settings) as services:
        bench = Bench(
            services.kafka_bootstrap, services.database_url, records, args.partitions, args.year
        )
        asyncio.run(_execute(bench.admin_dsn, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
        for workers, other in runs:
            repo = args.other.resolve() if other and args.other else REPO
            result = measure(bench, workers, repo, args.top)
            results.append(result)
            print(
                f"\n{workers} worker(s) from {repo}: {result['per_second']:,} records/s,"
                f" worker {result['worker_cpu_ms_per_record']} ms and PostgreSQL"
                f" {result['database_cpu_ms_per_record']} ms of CPU a record"
                f" ({result['cores_busy']} cores busy);"
                f" worker RSS {result['worker_rss_mb']} MiB (peak"
                f" {result['worker_peak_rss_mb']}; by quarter of the records"
                f" {', '.join(str(mb) for mb in result['worker_rss_mb_by_quarter'])});"
                " statements"
                f" {result['statements_us_per_record']} µs a record, of which:",
                flush=True,
            )
            for row in result["top"]:
                print(
                    f"  {row['us_per_record']:8.1f} µs  {row['calls']:7,} calls"
                    f"  {row['hits_per_record']:6.1f} hits  {row['query'][:100]}",
                    flush=True,
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "parameters": vars(args) | {"out": str(args.out), "other": str(args.other)},
                "runs": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
