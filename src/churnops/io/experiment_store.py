"""Experiments on the SQL store: the current definition and bucket table of each, and their history.

Every change (create, a weight change, a bandit update, stop, promote) bumps the revision with a
compare-and-set, so two writers (two bandit tasks, an operator and a task) never overwrite each
other silently; the history keeps every revision with who and why. Each change is committed with
a change-feed row so every worker and replica picks it up within 2 s.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa

from churnops.errors import Conflict, NotFound
from churnops.io.privacy_store import publish_in
from churnops.io.sql_backends import PoolLimits
from churnops.io.sql_schema import experiment_history, experiments
from churnops.io.sql_store import SqlStore

RUNNING, STOPPED, PROMOTED = "running", "stopped", "promoted"


def experiment_limits() -> PoolLimits:
    """A serving worker reads experiments rarely: a small pool with short timeouts."""
    return PoolLimits(
        pool_size=1, max_overflow=2, pool_timeout_s=2.0, connect_timeout_s=2, statement_timeout_ms=5_000
    )


TOPIC = "experiments"


@dataclass(frozen=True)
class StoredExperiment:
    name: str
    status: str
    definition: dict[str, Any]
    bucket_table: dict[str, Any]
    revision: int
    created_at_us: int
    updated_at_us: int
    created_by: str | None
    winner: str | None
    looks: dict[str, Any]


def _now_us() -> int:
    return time.time_ns() // 1000


def _stored(row: Mapping[Any, Any]) -> StoredExperiment:
    return StoredExperiment(
        name=str(row["name"]),
        status=str(row["status"]),
        definition=dict(orjson.loads(row["definition"])),
        bucket_table=dict(orjson.loads(row["bucket_table"])),
        revision=int(row["revision"]),
        created_at_us=int(row["created_at_us"]),
        updated_at_us=int(row["updated_at_us"]),
        created_by=row["created_by"],
        winner=row["winner"],
        looks=dict(orjson.loads(row["looks"] or "{}")),
    )


class ExperimentStore:
    def __init__(self, store: SqlStore) -> None:
        self.store = store

    def get(self, name: str) -> StoredExperiment:
        with self.store.ready().connect() as conn:
            row = conn.execute(sa.select(experiments).where(experiments.c.name == name)).one_or_none()
        if row is None:
            raise NotFound(f"no experiment named {name!r}")
        return _stored(row._mapping)

    def all(self) -> list[StoredExperiment]:
        query = sa.select(experiments).order_by(experiments.c.created_at_us.desc())
        with self.store.ready().connect() as conn:
            return [_stored(row._mapping) for row in conn.execute(query)]

    def running(self) -> StoredExperiment | None:
        query = sa.select(experiments).where(experiments.c.status == RUNNING)
        with self.store.ready().connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _stored(row._mapping)

    def history(self, name: str) -> list[dict[str, Any]]:
        query = (
            sa.select(experiment_history)
            .where(experiment_history.c.name == name)
            .order_by(experiment_history.c.revision)
        )
        with self.store.ready().connect() as conn:
            return [
                {
                    "revision": int(r.revision),
                    "at_us": int(r.at_us),
                    "action": r.action,
                    "principal": r.principal,
                    "weights": {a["name"]: a["weight"] for a in orjson.loads(r.definition)["arms"]},
                    "details": orjson.loads(r.details or "{}"),
                }
                for r in conn.execute(query)
            ]

    def create(
        self, definition: dict[str, Any], table: dict[str, Any], principal: str | None, conn: sa.Connection
    ) -> StoredExperiment:
        """Insert a running experiment (inside the caller's transaction, with its ledger event)."""
        name = str(definition["name"])
        exists = conn.execute(sa.select(experiments.c.status).where(experiments.c.name == name)).scalar()
        if exists is not None:
            raise Conflict(f"experiment {name!r} already exists ({exists}): choose another name")
        running = conn.execute(sa.select(experiments.c.name).where(experiments.c.status == RUNNING)).scalar()
        if running is not None:
            raise Conflict(
                f"experiment {running!r} is running over the same traffic: stop it first "
                "(one experiment at a time; overlapping experiments are not layered)"
            )
        now = _now_us()
        row = {
            "name": name,
            "status": RUNNING,
            "definition": orjson.dumps(definition).decode(),
            "bucket_table": orjson.dumps(table).decode(),
            "revision": 1,
            "created_at_us": now,
            "updated_at_us": now,
            "created_by": principal,
            "winner": None,
            "looks": "{}",
        }
        conn.execute(experiments.insert().values(row))
        self._history(
            conn, name, 1, "create", str(row["definition"]), str(row["bucket_table"]), principal, {}
        )
        publish_in(conn, TOPIC, {"name": name, "revision": 1, "action": "create"})
        return _stored(row)

    def update(
        self,
        conn: sa.Connection,
        current: StoredExperiment,
        action: str,
        principal: str | None,
        *,
        definition: dict[str, Any] | None = None,
        table: dict[str, Any] | None = None,
        status: str | None = None,
        winner: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> int:
        """Compare-and-set on the revision; returns the new revision (Conflict when it moved)."""
        revision = current.revision + 1
        values: dict[str, Any] = {"revision": revision, "updated_at_us": _now_us()}
        text_definition = orjson.dumps(definition or current.definition).decode()
        text_table = orjson.dumps(table or current.bucket_table).decode()
        values |= {"definition": text_definition, "bucket_table": text_table}
        if status is not None:
            values["status"] = status
        if winner is not None:
            values["winner"] = winner
        moved = conn.execute(
            experiments.update()
            .where(experiments.c.name == current.name, experiments.c.revision == current.revision)
            .values(values)
        ).rowcount
        if moved != 1:
            raise Conflict(f"experiment {current.name!r} changed meanwhile: read it again and retry")
        self._history(
            conn, current.name, revision, action, text_definition, text_table, principal, details or {}
        )
        publish_in(conn, TOPIC, {"name": current.name, "revision": revision, "action": action})
        return revision

    def save_looks(self, name: str, looks: dict[str, Any]) -> None:
        """The sequential tests' state after a look (their running intersections)."""
        with self.store.ready().begin() as conn:
            conn.execute(
                experiments.update()
                .where(experiments.c.name == name)
                .values(looks=orjson.dumps(looks).decode())
            )

    @staticmethod
    def _history(
        conn: sa.Connection,
        name: str,
        revision: int,
        action: str,
        definition: str,
        table: str,
        principal: str | None,
        details: dict[str, Any],
    ) -> None:
        conn.execute(
            experiment_history.insert().values(
                name=name,
                revision=revision,
                at_us=_now_us(),
                action=action,
                definition=definition,
                bucket_table=table,
                principal=principal,
                details=orjson.dumps(details).decode(),
            )
        )
