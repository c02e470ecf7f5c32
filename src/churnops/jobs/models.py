"""Model management by hand: promote, rollback, approve and the history of every alias move.

Each goes through the one promotion path (jobs.promote); the functions taking a `Lifecycle` are
what the HTTP routes call with the worker's own stores, the others open the stores themselves.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from churnops.errors import Conflict, NotFound
from churnops.io.lifecycle_store import lifecycle_events
from churnops.io.registry import CHAMPION
from churnops.jobs.promote import Lifecycle, Move, open_lifecycle
from churnops.jobs.promote import promote as promote_path
from churnops.settings import Settings

CHAMPION_MOVES = ("models.register", "models.promote", "models.approve", "models.rollback")


def promote(
    settings: Settings,
    version: str,
    model: str | None = None,
    *,
    principal: str | None,
    force: bool = False,
    trigger: str = "manual",
) -> Move:
    """`churnops models promote VERSION [--force]` (and an experiment's winner): gates, then champion
    (or pending approval)."""
    with open_lifecycle(settings) as lc:
        return promote_path(lc, version, principal=principal, model=model, force=force, trigger=trigger)


def approve(lc: Lifecycle, version: str, principal: str | None, model: str | None = None) -> Move:
    """Promote a version that passed its gates and waits for approval; the approver is recorded."""
    return promote_path(lc, version, action="approve", trigger="approval", principal=principal, model=model)


def rollback(
    lc: Lifecycle,
    to: str | None = None,
    *,
    principal: str | None,
    model: str | None = None,
    trigger: str = "manual",
    reason: str | None = None,
) -> Move:
    """Back to the champion the current one replaced (or to `to`, a former champion)."""
    name = lc.model(model)
    current = lc.registry.alias_version(name, CHAMPION)
    if current is None:
        raise Conflict(f"{name} has no champion to roll back from")
    target = to or previous_champion(lc, name, current)
    if target is None:
        raise Conflict(f"{name} v{current} has no earlier champion to roll back to")
    if to is not None and to not in former_champions(lc, name):
        if not lc.registry.version_exists(name, to):
            raise NotFound(f"{name} has no version {to!r}")
        raise Conflict(f"v{to} was never champion: use `churnops models promote {to}` (its gates run)")
    text = f"rolled back from v{current} to v{target}" + (f": {reason}" if reason else "")
    return promote_path(
        lc, target, action="rollback", trigger=trigger, principal=principal, model=name, reason=text
    )


def previous_champion(lc: Lifecycle, name: str, current: str) -> str | None:
    """The version the current champion replaced, per the newest promotion that made it champion (a
    rollback is skipped: rolling back twice goes further back, not forth)."""
    for event in lifecycle_events(lc.sql, prefixes=CHAMPION_MOVES):
        details = event["details"]
        if event["action"] == "models.rollback" or details.get("model") != name:
            continue
        if details.get("to") == current and details.get("outcome") == CHAMPION:
            previous = details.get("from")
            return str(previous) if previous else None
    return None


def former_champions(lc: Lifecycle, name: str) -> set[str]:
    return {
        str(e["details"]["to"])
        for e in lifecycle_events(lc.sql, prefixes=CHAMPION_MOVES)
        if e["details"].get("model") == name and e["details"].get("outcome") == CHAMPION
    }


def history(lc: Lifecycle, model: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """Every alias move and gate decision, newest first: who, when, what, why, the evidence."""
    name = model or lc.settings.model_name
    rows = []
    for event in lifecycle_events(lc.sql, prefixes=("models.",)):
        details = event["details"]
        if name is not None and details.get("model") != name:
            continue
        rows.append(
            {
                "event_id": event["event_id"],
                "at": datetime.fromtimestamp(event["at_us"] / 1e6, tz=UTC).isoformat(),
                "action": event["action"],
                "principal": event["principal"],
                "model": details.get("model"),
                "from": details.get("from"),
                "to": details.get("to"),
                "outcome": details.get("outcome"),
                "trigger": details.get("trigger"),
                "reason": details.get("reason"),
                "override": details.get("override"),
                "gates": details.get("gates"),
            }
        )
        if limit is not None and len(rows) >= limit:
            break
    return rows
