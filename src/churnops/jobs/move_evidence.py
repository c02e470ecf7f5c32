"""What a model move's ledger event says: from, to, trigger, outcome, the reason in one line, the gate
verdicts as evidence and the override if forced (the fields `models history` shows)."""

from __future__ import annotations

from typing import Any


def move_details(
    name: str,
    version: str,
    previous: str | None,
    trigger: str,
    outcome: str,
    reason: str,
    gates: dict[str, Any] | None,
    override: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "model": name,
        "from": previous,
        "to": version,
        "trigger": trigger,
        "outcome": outcome,
        "reason": reason,
        "gates": gate_summary(gates),
        "override": override,
    }


def gate_summary(gates: dict[str, Any] | None) -> dict[str, Any] | None:
    """The verdicts as evidence (name, value, limit, pass, one line; detail without bulky arrays)."""
    if gates is None:
        return None
    return {
        "status": gates.get("status"),
        "champion": gates.get("champion"),
        "evaluation": gates.get("evaluation"),
        "verdicts": [
            {k: v.get(k) for k in ("name", "value", "limit", "passed", "reason", "detail")}
            for v in gates.get("verdicts", [])
        ],
    }


def move_reason(
    action: str,
    version: str,
    previous: str | None,
    gates: dict[str, Any] | None,
    override: dict[str, Any] | None,
) -> str:
    if action == "rollback":
        return f"rolled back to v{version} (from v{previous})"
    if override:
        failed = ", ".join(override["failed_gates"]) or "none"
        return f"forced: v{version} promoted over failed gates ({failed})"
    against = f"champion v{previous}" if previous else "no champion (first version)"
    passed = [v for v in (gates or {}).get("verdicts", []) if v["passed"]]
    discrimination = next((v for v in passed if v["name"] == "discrimination"), None)
    lead = f"; {discrimination['reason']}" if discrimination else ""
    verb = "approved" if action == "approve" else "passed"
    return f"v{version} {verb}: all {len(passed)} gates passed against {against}{lead}"
