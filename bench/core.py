"""The worker's own decisions per record, in-process: parsing, then applying.

    .venv/bin/python bench/core.py [--students 3000] [--rounds 5] [--other TREE] [--out FILE]

No Kafka and no database, so what a change to the hot path in Python gains shows apart
from the broker's and PostgreSQL's noise: each round, a fresh process parses a simulated
year's records as the worker does (``BatchProcessor.parse``: the contract, the
identifiers, the digest), then applies them in batches of the worker's batch size
(``apply_batch`` and every changed balance's document), each batch starting from fresh
ledgers of what the batches before stored, as a batch reads them from the database. It
prints the CPU time (``process_time``) per record of both parts.

``--other TREE`` runs the same in a second checkout (another commit's), alternated round
by round with this one on the same simulated year, and prints each figure beside that
baseline. Rounds on a shared machine differ; compare the medians and minima of one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def measure(tree: Path, students: int, seed: int) -> dict[str, Any]:
    """One round, in this process, on the code of ``tree``."""
    sys.path.insert(0, str(tree))
    import gc
    import time

    from producers.simulator import generate
    from quota import StudentLedger, apply_batch
    from schemas.partitioning import student_key_hash
    from schemas.settings import Settings
    from streams.messages import balance_document
    from streams.processor import BatchProcessor, Intake
    from streams.runtime import RawRecord

    settings = Settings()
    records = [
        RawRecord(
            r.topic,
            student_key_hash(r.key) % settings.partitions,
            offset,
            r.timestamp_ms,
            r.key.encode(),
            r.value,
        )
        for offset, r in enumerate(generate(2025, students, seed))
    ]
    # As the worker runs: the collector tuned, what is alive now left out of it.
    gc.collect()
    gc.freeze()
    gc.set_threshold(settings.gc_threshold or 700, 50, 100)
    processor = BatchProcessor(None, settings)  # parse needs no pool
    rules = settings.quota_rules

    started = time.process_time()
    parsed = [processor.parse(record) for record in records]
    parse_seconds = time.process_time() - started

    intakes = [item for item in parsed if isinstance(item, Intake)]
    stored: dict[str, StudentLedger] = {}
    applied: set[str] = set()
    balances = 0
    started = time.process_time()
    for start in range(0, len(intakes), settings.batch_size):
        batch = intakes[start : start + settings.batch_size]
        ledgers: dict[str, StudentLedger] = {}
        for ssin in {item.ssin for item in batch}:
            old = stored.get(ssin)
            ledgers[ssin] = (
                StudentLedger(ssin)
                if old is None
                else StudentLedger(ssin, dict(old.periods), dict(old.wage_reports), old.next_seq)
            )
        result = apply_batch(ledgers, [(i.ssin, i.command) for i in batch], applied, rules)
        balances += len([balance_document(b) for b in result.balances])
        stored.update(ledgers)
    apply_seconds = time.process_time() - started
    return {
        "records": len(records),
        "commands": len(intakes),
        "balances": balances,
        "parse_us_per_record": round(1e6 * parse_seconds / len(records), 2),
        "apply_us_per_record": round(1e6 * apply_seconds / len(records), 2),
    }


def _round(tree: Path, students: int, seed: int) -> dict[str, Any]:
    """One round in a fresh process (nothing warm from a round before)."""
    command = [sys.executable, __file__, "--child", str(tree), "--students", str(students)]
    done = subprocess.run(
        [*command, "--seed", str(seed)],
        cwd=tree,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"the round in {tree} failed:\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"rounds": rounds}
    for part in ("parse", "apply"):
        values = [r[f"{part}_us_per_record"] for r in rounds]
        out[f"{part}_us_median"] = round(statistics.median(values), 2)
        out[f"{part}_us_min"] = round(min(values), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    # Not run.year_options: importing run imports this checkout's packages, and a round
    # of --other must import the other checkout's.
    parser.add_argument("--students", type=int, default=3000, help="students of the simulated year")
    parser.add_argument(
        "--seed", type=int, default=1, help="the simulator's seed (same seed, same records)"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="fresh processes per checkout, alternated"
    )
    parser.add_argument(
        "--other", type=Path, metavar="TREE", help="a second checkout, measured alternately"
    )
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO / "bench" / "results" / "core.json",
        help="where the figures are written as JSON",
    )
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child.resolve(), args.students, args.seed)))
        return

    trees = {"this": REPO} | ({"other": args.other.resolve()} if args.other else {})
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
    for n in range(args.rounds):
        for name, tree in trees.items():
            figures = _round(tree, args.students, args.seed)
            rounds[name].append(figures)
            print(
                f"round {n + 1}/{args.rounds} {name:5} ({tree}): parse "
                f"{figures['parse_us_per_record']} us, apply {figures['apply_us_per_record']}"
                f" us a record ({figures['records']:,} records)",
                flush=True,
            )
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "parameters": {"students": args.students, "seed": args.seed, "rounds": args.rounds},
        "trees": {name: str(tree) for name, tree in trees.items()},
    }
    for name in trees:
        result[name] = _summary(rounds[name])
    for part in ("parse", "apply"):
        line = f"{part:5}: median {result['this'][f'{part}_us_median']} us a record"
        line += f", min {result['this'][f'{part}_us_min']}"
        if "other" in result:
            for stat in ("median", "min"):
                ratio = result["this"][f"{part}_us_{stat}"] / result["other"][f"{part}_us_{stat}"]
                result.setdefault("ratio_to_other", {})[f"{part}_{stat}"] = round(ratio, 3)
            line += (
                f"; other: median {result['other'][f'{part}_us_median']}, min "
                f"{result['other'][f'{part}_us_min']} (ratio of medians "
                f"{result['ratio_to_other'][f'{part}_median']})"
            )
        print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
