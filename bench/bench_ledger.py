"""Ledger writer throughput into PostgreSQL on this machine (target: >= 20,000 records/s).

Feeds the real writer path — seal (pseudonym, canonical JSON, keyed hash, AES-GCM under a
per-customer key), chain (SHA-256) and store in batches (COPY) — with realistic records,
one thread, and reports records/s for the whole path and for its parts. Also the spool
replay (idempotent INSERT ... ON CONFLICT) that follows an outage.

Usage: python bench/bench_ledger.py [--records 200000] [--batch 5000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tests.pg import throwaway_database

from churnops.core.ledger import Chain, RecordIds
from churnops.core.ledger_rows import Prediction, Sealer
from churnops.core.synthetic import generate_customers
from churnops.io.ledger_store import LedgerStore
from churnops.io.secrets import load_secrets
from churnops.io.sql_store import SqlStore
from churnops.settings import Settings


def predictions(count: int) -> list[Prediction]:
    frame = generate_customers(20_000, seed=1)
    ids = list(frame["customer_id"])
    vectors = frame.drop(columns=["customer_id", "churn", "true_churn_probability"]).to_dict(orient="records")
    record_ids = RecordIds()
    now = time.time_ns() // 1000
    reasons = [("contract", 0.68), ("internet_service", 0.56), ("support_calls", 0.29)]
    return [
        Prediction(
            record_ids.next(),
            now + i,
            f"req-{i}",
            ids[i % len(ids)],
            "key_abc",
            "churn-synthetic",
            "3",
            "champion",
            None,
            None,
            "served",
            0.3141,
            False,
            0.093,
            reasons,
            "online_store",
            vectors[i % len(vectors)],
        )
        for i in range(count)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5_000)
    args = parser.parse_args()
    items = predictions(args.records)
    with tempfile.TemporaryDirectory() as home, throwaway_database("churnops_bench") as url:
        keys = load_secrets(Settings(churnops_home=Path(home)))
        store = LedgerStore(SqlStore(url))
        store.store.upgrade()
        sealer = Sealer(Chain("bench"), keys.pseudonym_key, keys.feature_key, keys.wrapping_key, 7)

        started = time.perf_counter()
        sealed = [sealer.prediction_row(p) for p in items]
        seal_s = time.perf_counter() - started
        new_keys = sealer.take_new_keys()

        started = time.perf_counter()
        for i in range(0, len(sealed), args.batch):
            store.append(sealed[i : i + args.batch], new_keys if i == 0 else ())
        copy_s = time.perf_counter() - started

        started = time.perf_counter()
        for i in range(0, len(sealed), args.batch):  # all duplicates now: what a replay after a lost ack does
            store.append(sealed[i : i + args.batch], (), idempotent=True)
        replay_s = time.perf_counter() - started
        store.store.close()

    n = len(items)
    print(f"ledger writer, {n:,} records, batches of {args.batch:,}, one thread, PostgreSQL on 127.0.0.1")
    print(f"  seal + chain (pseudonym, AES-GCM, SHA-256)   {n / seal_s:10,.0f} records/s  ({seal_s:.2f} s)")
    print(f"  store (COPY, one transaction per batch)      {n / copy_s:10,.0f} records/s  ({copy_s:.2f} s)")
    whole = seal_s + copy_s
    verdict = "ok" if n / whole >= 20_000 else "BELOW the 20,000 records/s target"
    print(f"  whole writer path                            {n / whole:10,.0f} records/s  {verdict}")
    print(
        f"  spool replay (INSERT ... ON CONFLICT)        {n / replay_s:10,.0f} records/s  ({replay_s:.2f} s)"
    )


if __name__ == "__main__":
    main()
