"""The CLI stays light at import, lists its command groups, shows masked settings, generates data."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from churnops.cli import app

pytestmark = pytest.mark.unit

HEAVY_CHECK = (
    "import churnops.cli, sys; heavy = [m for m in ('mlflow','great_expectations','lightgbm','xgboost',"
    "'sklearn','pandas','matplotlib') if m in sys.modules]; print(heavy)"
)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Commands configure the root logger (as `main()` would): put it back afterwards."""
    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "ERROR")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def run_cli(*args: str, cwd: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "CHURNOPS_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "churnops", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_importing_the_cli_loads_no_heavy_library() -> None:
    out = subprocess.run(
        [sys.executable, "-c", HEAVY_CHECK], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_help_lists_the_command_groups(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for command in ("data", "pipeline", "models", "config", "demo"):
        assert command in result.stdout


def test_no_arguments_shows_help(runner: CliRunner) -> None:
    result = runner.invoke(app, [])
    assert "pipeline" in result.output
    assert "Usage" in result.output


def test_config_show_json_masks_secrets(
    runner: CliRunner, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://app:hunter2-secret@db:5432/churnops")
    result = runner.invoke(app, ["config", "show", "--json"])
    assert result.exit_code == 0, result.output
    view = json.loads(result.stdout)
    assert {"churnops_home", "mlflow_tracking_uri", "resolved"} <= set(view)
    assert view["churnops_home"] == str(home.resolve())
    assert view["mlflow_tracking_uri"] is None
    assert view["resolved"]["tracking_uri"] == f"sqlite:///{home.resolve() / 'mlflow.db'}"
    assert view["database_url"] == "postgresql+psycopg://app:***@db:5432/churnops"
    assert view["resolved"]["offline_store"] == "postgresql+psycopg://app:***@db:5432/churnops"
    assert "hunter2" not in result.stdout


def test_config_show_text_masks_secrets(
    runner: CliRunner, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JWT_SECRET_KEY", "jwt-hunter2")
    result = runner.invoke(app, ["config", "show"])
    assert result.exit_code == 0, result.output
    assert "resolved.offline_store" in result.stdout
    assert "jwt-hunter2" not in result.stdout


@pytest.mark.usefixtures("restore_logging")
def test_data_generate_writes_the_requested_rows(runner: CliRunner, home: Path, tmp_path: Path) -> None:
    out = tmp_path / "tmp" / "x.csv"
    result = runner.invoke(app, ["data", "generate", "--rows", "500", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = out.read_text().splitlines()
    assert len(lines) == 501
    assert "true_churn_probability" in lines[0].split(",")
    frame = pd.read_csv(out)
    assert frame["churn"].isin(["Yes", "No"]).all()
    assert frame["true_churn_probability"].between(0, 1).all()


def test_unknown_drift_is_one_clean_error_line(tmp_path: Path) -> None:
    out = tmp_path / "x.csv"
    result = run_cli(
        "data", "generate", "--rows", "10", "--out", str(out), "--drift", "bogus", cwd=tmp_path, home=tmp_path
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    assert "unexpected" not in lines[0]
    for known in ("bogus", "price_increase", "encoding_change", "new_segment"):
        assert known in lines[0]
    assert not out.exists()


def test_library_chatter_stays_out_of_the_output_but_their_warnings_do_not(
    restore_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """Great Expectations sets its module loggers to INFO on import ("Created temporary directory ...
    for ephemeral docs site" in every validation): a level on the parent logger does not hide that."""
    from churnops.cli._common import configure_logging, make_console
    from churnops.settings import Settings

    configure_logging(Settings(), make_console(stderr=True))
    chatty = logging.getLogger("great_expectations.data_context.types.base")
    chatty.setLevel(logging.INFO)  # what the library does at import
    chatty.info("Created temporary directory for ephemeral docs site")
    chatty.warning("a library warning the user should see")
    logging.getLogger("churnops.jobs.train").info("trained logreg")
    err = capsys.readouterr().err
    assert "ephemeral docs site" not in err
    assert "a library warning the user should see" in err
    assert "trained logreg" in err


def test_no_help_text_loses_words_to_rich_markup() -> None:
    """Typer renders help through Rich markup: "[default: ...]" is a tag to Rich and vanishes, so
    `--model` once read "Registered model name ." in every command."""
    import typer
    from rich.text import Text

    # Typer's own command and option classes (not click's): read them by attribute.
    def walk(command: Any, path: str) -> Iterator[tuple[str, str]]:
        for text in (command.help, command.short_help):
            if text:
                yield path, text
        for param in command.params:
            if getattr(param, "help", None):
                yield f"{path} {param.opts[0]}", param.help
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, f"{path} {name}")

    texts = list(walk(typer.main.get_command(app), "churnops"))
    assert len(texts) > 100  # every command and option was read
    lost = [(where, text) for where, text in texts if Text.from_markup(text).plain != text]
    assert not lost, lost


def test_lifecycle_status_says_none_for_an_alias_nobody_holds(capsys: pytest.CaptureFixture[str]) -> None:
    from churnops.cli.lifecycle import _print_status

    report = {
        "model": "churn-synthetic",
        "champion": "1",
        "challenger": None,
        "pending_approval": None,
        "cycle_running": False,
        "bake": None,
        "trial": None,
        "last_cycle": None,
        "recent_events": [],
    }
    _print_status(report)
    first = capsys.readouterr().out.splitlines()[0]
    assert first == "model: churn-synthetic  champion: v1  challenger: none  pending approval: none", first


def test_the_estimate_line_says_its_verdict_once() -> None:
    from churnops.cli.monitor import _estimate_line

    unchecked = {"variant": "champion", "version": "1", "reliable": None,
                 "reasons": ["unchecked: 0 labels in matured cohorts < min 2000"]}  # fmt: skip
    assert (
        _estimate_line(unchecked)
        == "estimate for champion v1: unchecked: 0 labels in matured cohorts < min 2000"
    )
    reliable = {"variant": "a", "version": "2", "reliable": True, "reasons": []}
    assert _estimate_line(reliable) == "estimate for a v2: reliable"
    off = {"variant": "a", "version": "2", "reliable": False, "reasons": ["ECE 0.080 > 0.03 + noise 0.010"]}
    assert _estimate_line(off) == "estimate for a v2: UNRELIABLE: ECE 0.080 > 0.03 + noise 0.010"


def test_a_zero_gate_limit_reads_0_not_minus_0() -> None:
    from churnops.cli.gates import _number

    assert _number(-0.0) == "0"
    assert _number(None) == "-"
    assert _number(0.03327) == "0.03327"
