"""Run expectation suites with Great Expectations, in memory, and write JSON + HTML reports.

Great Expectations takes seconds to import, so it is imported inside the
function that runs it: importing this module stays cheap.
"""

from __future__ import annotations

import html
import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from churnops.core.expectations import ExpectationDef, with_category_keys
from churnops.core.spec import DatasetSpec
from churnops.errors import ConfigError, ValidationFailed

logger = logging.getLogger(__name__)

MAX_EXAMPLES = 5  # unexpected values kept per expectation: enough to debug, too few to leak a dataset
REDACTED = "[redacted]"
_INDEX_KEY = "churnops_index"  # GX returns results out of order; this meta key restores it
_OBSERVED_KEYS = (
    "observed_value",
    "element_count",
    "missing_count",
    "missing_percent",
    "unexpected_count",
    "unexpected_percent",
)


@dataclass(frozen=True)
class ExpectationResult:
    """The outcome of one expectation, with observed values already redacted where needed."""

    kind: str
    column: str | None
    rule: str
    success: bool
    observed: dict[str, Any] = field(default_factory=dict)
    examples: list[Any] = field(default_factory=list)  # at most MAX_EXAMPLES unexpected values
    redacted: bool = False  # True when examples were withheld because the column is PII
    error: str | None = None  # set when the check itself could not run

    def evidence(self) -> str:
        """What was observed, in words: 'got 12', '3.1% unexpected, e.g. 'M2M'' or the error."""
        if self.error:
            return f"check could not run: {self.error}"
        if "observed_value" in self.observed:
            return f"got {_format_observed(self.observed['observed_value'])}"
        if "unexpected_percent" not in self.observed:
            return ""
        percent = _format_percent(self.observed["unexpected_percent"])
        if self.kind == "ExpectColumnValuesToNotBeNull":
            return f"{percent} null"  # examples of nulls say nothing
        return f"{percent} unexpected{self._examples_text()}"

    def describe(self) -> str:
        """One line naming the column (or table) and the rule, plus the evidence."""
        where = f"column '{self.column}'" if self.column is not None else "table"
        evidence = self.evidence()
        if not evidence:
            return f"{where}: {self.rule}"
        if evidence.startswith("got "):
            return f"{where}: {self.rule}, {evidence}"
        return f"{where}: {self.rule} ({evidence})"

    def _examples_text(self) -> str:
        if self.redacted:
            return "; examples withheld for a PII column"
        distinct = list(dict.fromkeys(_format_value(v) for v in self.examples))[:3]
        return f", e.g. {', '.join(distinct)}" if distinct else ""


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of validating one frame, and where its reports were written."""

    success: bool
    results: list[ExpectationResult]
    json_path: Path
    html_path: Path

    @property
    def failures(self) -> list[ExpectationResult]:
        """Failed expectations, most fundamental first."""
        return [r for r in self.results if not r.success]

    def first_failure(self) -> str:
        """One line naming the column and rule of the first failure; "" when everything passed."""
        failures = self.failures
        return failures[0].describe() if failures else ""

    def raise_if_failed(self) -> None:
        """Raise `ValidationFailed` carrying the first failure and the HTML report path."""
        if not self.success:
            raise ValidationFailed(f"data validation failed: {self.first_failure()}", report=self.html_path)


def validate_frame(
    frame: pd.DataFrame,
    spec: DatasetSpec,
    expectations: Sequence[ExpectationDef],
    report_dir: Path,
    pii_columns: Iterable[str] | None = None,
) -> ValidationReport:
    """Validate `frame` against `expectations` in memory and write validation.json and validation.html.

    Reports are written whether or not the data passes. Examples of unexpected
    values are never shown for `pii_columns` (default: the spec's PII columns).
    """
    pii = set(spec.pii if pii_columns is None else pii_columns)
    started = time.perf_counter()
    # Compare categories by key, as the reference profile stores them (0/1 ints match "0"/"1").
    raw_results = _run_great_expectations(with_category_keys(frame, spec), expectations)
    results = [
        _to_result(definition, raw, redact=definition.column in pii)
        for definition, raw in zip(expectations, raw_results, strict=True)
    ]
    report_dir.mkdir(parents=True, exist_ok=True)
    report = ValidationReport(
        success=all(r.success for r in results),
        results=results,
        json_path=report_dir / "validation.json",
        html_path=report_dir / "validation.html",
    )
    summary = _summary(report, spec, frame)
    report.json_path.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    report.html_path.write_text(_render_html(summary, report), encoding="utf-8")
    logger.info(
        "validated %d expectations on %d rows in %.2fs: %s",
        len(results),
        len(frame),
        time.perf_counter() - started,
        "passed" if report.success else f"{len(report.failures)} failed",
    )
    return report


def _run_great_expectations(
    frame: pd.DataFrame, expectations: Sequence[ExpectationDef]
) -> list[dict[str, Any]]:
    """Run the suite on an ephemeral (in-memory) context; raw GX results in `expectations` order."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no tqdm noise in job logs
    batch = (
        context.data_sources.add_pandas("churnops")
        .add_dataframe_asset("frame")
        .add_batch_definition_whole_dataframe("whole_frame")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    suite = gx.ExpectationSuite(name="churnops")
    for index, definition in enumerate(expectations):
        suite.add_expectation(_to_gx_expectation(gx.expectations, definition, index))
    # BASIC keeps counts and a few examples; fuller formats collect row indexes and are slower.
    outcome = batch.validate(
        suite, result_format={"result_format": "BASIC", "partial_unexpected_count": MAX_EXAMPLES}
    )
    by_index = {_result_index(r): r.to_json_dict() for r in outcome.results}
    return [by_index[index] for index in range(len(expectations))]


def _result_index(result: Any) -> int:
    """Position of a GX result's expectation in our list (GX groups results by metric, not order)."""
    return int(result.expectation_config.meta[_INDEX_KEY])


def _to_gx_expectation(module: Any, definition: ExpectationDef, index: int) -> Any:
    expectation_class = getattr(module, definition.kind, None)
    if not isinstance(expectation_class, type):
        raise ConfigError(f"unknown expectation kind {definition.kind!r}")
    column = {} if definition.column is None else {"column": definition.column}
    try:
        return expectation_class(**column, **definition.kwargs, meta={_INDEX_KEY: index})
    except (TypeError, ValueError) as err:  # GX raises pydantic (v1) ValidationError, a ValueError
        where = definition.column or "table"
        message = str(err).splitlines()[-1].strip()
        raise ConfigError(f"expectation {definition.kind} on {where}: invalid arguments ({message})") from err


def _to_result(definition: ExpectationDef, raw: dict[str, Any], redact: bool) -> ExpectationResult:
    result = raw.get("result") or {}
    observed = {key: _jsonable(result[key]) for key in _OBSERVED_KEYS if key in result}
    examples = [_jsonable(v) for v in (result.get("partial_unexpected_list") or [])[:MAX_EXAMPLES]]
    if definition.kind == "ExpectColumnValuesToNotBeNull":
        examples = []  # a list of nulls tells the reader nothing
    error = _exception_message(raw.get("exception_info") or {})
    if redact:
        examples = [REDACTED] * len(examples)
        error = "details withheld (PII column)" if error else None
        if "observed_value" in observed and definition.kind != "ExpectColumnValuesToBeInTypeList":
            observed["observed_value"] = _redact_unless_number(observed["observed_value"])
    return ExpectationResult(
        kind=definition.kind,
        column=definition.column,
        rule=definition.rule,
        success=bool(raw.get("success")),
        observed=observed,
        examples=examples,
        redacted=redact and bool(examples),
        error=error,
    )


def _exception_message(info: dict[str, Any]) -> str | None:
    """GX nests exception info per metric when a metric fails; return the first message."""
    candidates = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
    for candidate in candidates:
        if candidate.get("raised_exception"):
            message = str(candidate.get("exception_message") or "error")
            return " ".join(message.split())[:200]
    return None


def _redact_unless_number(value: Any) -> Any:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else REDACTED


def _jsonable(value: Any) -> Any:
    """A JSON-safe scalar: NaN becomes None, anything exotic its string."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return repr(value) if isinstance(value, str) and value != REDACTED else str(value)


def _format_observed(value: Any) -> str:
    # Observed values are counts or dtype names: print them bare ("got 12", "got str").
    return f"{value:g}" if isinstance(value, float) else str(value)


def _format_percent(percent: Any) -> str:
    if not isinstance(percent, int | float):
        return "?%"
    # Small shares keep two significant digits so 0.014% does not print as 0.0%.
    return f"{percent:.2g}%" if 0 < percent < 0.1 else f"{percent:.1f}%"


def _summary(report: ValidationReport, spec: DatasetSpec, frame: pd.DataFrame) -> dict[str, Any]:
    return {
        "spec": spec.name,
        "success": report.success,
        "rows": len(frame),
        "columns": len(frame.columns),
        "evaluated": len(report.results),
        "failed": len(report.failures),
        "first_failure": report.first_failure() or None,
        "results": [
            {
                "kind": r.kind,
                "column": r.column,
                "rule": r.rule,
                "success": r.success,
                "observed": r.observed,
                "partial_unexpected_list": r.examples,
                "redacted": r.redacted,
                "error": r.error,
            }
            for r in report.results
        ],
    }


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #1f2328; }
.banner { padding: .75rem 1rem; border-radius: 6px; font-weight: 600; }
.banner.pass { background: #dafbe1; } .banner.fail { background: #ffebe9; }
table { border-collapse: collapse; width: 100%; margin-top: 1rem; font-size: .9rem; }
th, td { border: 1px solid #d0d7de; padding: .35rem .5rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
tr.pass td.status { background: #dafbe1; color: #116329; }
tr.fail td.status { background: #ffebe9; color: #a40e26; font-weight: 600; }
code { font-size: .85rem; }
"""


def _render_html(summary: dict[str, Any], report: ValidationReport) -> str:
    """A self-contained page: inline CSS, no scripts, every value escaped."""
    status = "pass" if report.success else "fail"
    headline = (
        f"{'PASSED' if report.success else 'FAILED'}: {summary['failed']} of {summary['evaluated']} "
        f"expectations failed on {summary['rows']} rows × {summary['columns']} columns"
    )
    first = report.first_failure()
    rows = "\n".join(_html_row(i, r) for i, r in enumerate(report.results, start=1))
    title = html.escape(f"churnops data validation: {summary['spec']}")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{_CSS}</style></head>
<body>
<h1>{title}</h1>
<p class="banner {status}">{html.escape(headline)}</p>
{f"<p>First failure: <code>{html.escape(first)}</code></p>" if first else ""}
<table>
<thead><tr><th>#</th><th>status</th><th>column</th><th>rule</th><th>check</th><th>observed</th></tr></thead>
<tbody>
{rows}
</tbody>
</table>
</body></html>
"""


def _html_row(number: int, result: ExpectationResult) -> str:
    status = "pass" if result.success else "fail"
    cells = (
        str(number),
        status.upper(),
        result.column if result.column is not None else "(table)",
        result.rule,
        result.kind,
        result.evidence(),
    )
    escaped = [html.escape(c) for c in cells]
    return (
        f'<tr class="{status}"><td>{escaped[0]}</td><td class="status">{escaped[1]}</td>'
        f"<td>{escaped[2]}</td><td>{escaped[3]}</td><td><code>{escaped[4]}</code></td>"
        f"<td>{escaped[5]}</td></tr>"
    )
