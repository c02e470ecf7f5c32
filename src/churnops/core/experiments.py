"""Experiment definitions: arms pinned to model versions, shadows, mode and the decision rule.

A definition comes from a YAML file or a JSON body (DESIGN.md, "Experiments"):

    name: q1-models
    mode: fixed                  # or bandit
    primary_metric: log_loss     # brier | profit | auc
    alpha: 0.05
    arms:                        # model: defaults to the served model name
      - {name: control, version: "3", weight: 40, control: true}
      - {name: lgbm-4, version: "4", weight: 15}
    shadows:
      - {name: xgb-5, version: "5", sample: 0.1}

Every rule it breaks is refused with one message naming the field (`arms[1].weight: ...`), as an
`ExperimentDefinitionError` (an `InvalidRequest`: 422 over HTTP, one line on the CLI).

Arms pin versions (digits, as the registry numbers them), never aliases, so a moving alias never
changes what an arm serves mid-test. Weights are relative (40/15/15/15/15 and 0.4/0.15/... are the
same experiment); an arm of weight 0 is paused (keeps its name, gets no new traffic). The salt
defaults to the experiment name: a new experiment reshuffles customers, a weight change does not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from churnops.errors import InvalidRequest

PrimaryMetric = Literal["log_loss", "brier", "profit", "auc"]
LOWER_IS_BETTER: dict[str, bool] = {"log_loss": True, "brier": True, "profit": False, "auc": False}
MAX_ARMS = 64
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_VERSION = re.compile(r"^[1-9][0-9]{0,9}$")
_FROZEN = ConfigDict(frozen=True, extra="forbid")


def _check_name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"must be 1-64 letters, digits, '.', '_' or '-' starting with a letter or digit, got {value!r}"
        )
    return value


def _check_version(value: Any) -> Any:
    # YAML reads `version: 3` as an int; accept it, but never an alias such as "champion".
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not _VERSION.match(text):
        raise ValueError(f'must be a registered version number such as "3" (not an alias), got {value!r}')
    return text


# The patterns are in the JSON schema too (OpenAPI clients and fuzzers see them); the validators
# give the messages.
Name = Annotated[
    str, AfterValidator(_check_name), WithJsonSchema({"type": "string", "pattern": _NAME.pattern})
]
Version = Annotated[
    str,
    BeforeValidator(_check_version),
    WithJsonSchema({"type": "string", "pattern": _VERSION.pattern, "examples": ["3"]}),
]


class ExperimentDefinitionError(InvalidRequest):
    """An experiment definition breaks a rule; `field` is its path, e.g. `arms[2].weight`."""


class Arm(BaseModel):
    """One arm: a pinned model version served to a weighted share of customers."""

    model_config = _FROZEN
    name: Name
    version: Version
    weight: float = Field(ge=0, allow_inf_nan=False)
    model: str | None = Field(None, min_length=1)  # None: the served model name
    control: bool = False


class Shadow(BaseModel):
    """A model version scored beside the served arm for a share of requests, never returned."""

    model_config = _FROZEN
    name: Name
    version: Version
    sample: float = Field(ge=0, le=1, allow_inf_nan=False)
    model: str | None = Field(None, min_length=1)


class ExperimentDefinition(BaseModel):
    """A validated experiment (see the module docstring for the rules)."""

    model_config = _FROZEN
    name: Name
    # The bounds are stated in the JSON schema; `_check_arms` enforces them with its own message.
    arms: tuple[Arm, ...] = Field(json_schema_extra={"minItems": 2, "maxItems": MAX_ARMS})
    shadows: tuple[Shadow, ...] = ()
    salt: str | None = Field(None, min_length=1, max_length=256)
    mode: Literal["fixed", "bandit"] = "fixed"
    primary_metric: PrimaryMetric = "log_loss"
    alpha: float = Field(0.05, gt=0, le=0.2)
    min_labels_per_arm: int = Field(500, ge=30)
    # Optional ends of a test: equivalence (sequence within +/- margin) or a label budget.
    equivalence_margin: float | None = Field(None, gt=0, allow_inf_nan=False)
    max_labels_per_arm: int | None = Field(None, ge=30)
    bandit_floor: float = Field(0.01, ge=0, lt=0.5)  # share of traffic every arm keeps in bandit mode

    @model_validator(mode="after")
    def _rules(self) -> ExperimentDefinition:
        _check_arms(self.arms)
        _check_unique("shadows", [s.name for s in self.shadows], taken={a.name for a in self.arms})
        if self.mode == "bandit" and self.bandit_floor * len(self.arms) > 1:
            raise ValueError(f"bandit_floor: {self.bandit_floor} x {len(self.arms)} arms exceeds all traffic")
        if self.max_labels_per_arm is not None and self.max_labels_per_arm < self.min_labels_per_arm:
            raise ValueError("max_labels_per_arm: must be >= min_labels_per_arm")
        return self

    @property
    def control(self) -> Arm:
        """The control arm (exactly one, by validation)."""
        return next(a for a in self.arms if a.control)

    @property
    def effective_salt(self) -> str:
        """The hashing salt: the given salt, else the experiment name."""
        return self.salt if self.salt is not None else self.name

    @property
    def lower_is_better(self) -> bool:
        """Whether a smaller value of the primary metric is an improvement."""
        return LOWER_IS_BETTER[self.primary_metric]

    def weights(self) -> dict[str, float]:
        """Arm name -> weight, in definition order."""
        return {a.name: a.weight for a in self.arms}

    def with_weights(self, weights: Mapping[str, float]) -> ExperimentDefinition:
        """The same experiment with new arm weights (a bandit update or an operator's change);
        every arm must be named, and the result is validated like a new definition."""
        unknown = sorted(set(weights) - {a.name for a in self.arms})
        missing = [a.name for a in self.arms if a.name not in weights]
        if unknown or missing:
            raise ExperimentDefinitionError(
                f"weights: must name every arm exactly (unknown {unknown}, missing {missing})",
                field="weights",
            )
        raw = self.model_dump()
        for arm in raw["arms"]:
            arm["weight"] = weights[arm["name"]]
        return parse_experiment(raw)


def parse_experiment(raw: Any, source: str = "experiment") -> ExperimentDefinition:
    """Validate a mapping (parsed YAML or JSON); the first broken rule is raised, naming its field."""
    if not isinstance(raw, Mapping):
        raise ExperimentDefinitionError(f"{source}: expected a mapping, got {type(raw).__name__}")
    try:
        return ExperimentDefinition.model_validate(dict(raw))
    except ValidationError as err:
        first = err.errors()[0]
        where = _path(first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        if not where:  # a rule across fields: its message starts with the field it names
            where, _, message = message.partition(": ")
        elif first["type"] != "value_error" and isinstance(first.get("input"), int | float | str):
            message = f"{message}, got {first['input']!r}"
        raise ExperimentDefinitionError(f"{source}: {where}: {message}", field=where) from err


def parse_experiment_text(text: str, source: str = "experiment") -> ExperimentDefinition:
    """Parse YAML (or JSON, which YAML reads) text into a definition; malformed text is one error."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None)
        why = f" ({problem})" if problem else ""
        raise ExperimentDefinitionError(f"{source}: not valid YAML{where}{why}", malformed=True) from err
    return parse_experiment(raw, source)


def _check_arms(arms: tuple[Arm, ...]) -> None:
    if not 2 <= len(arms) <= MAX_ARMS:
        raise ValueError(
            f"arms: {len(arms)} given; an experiment needs a control and 1 to {MAX_ARMS - 1} more"
        )
    _check_unique("arms", [a.name for a in arms], taken=set())
    total = sum(a.weight for a in arms)
    if not total > 0:
        raise ValueError(f"arms: weights must sum to a positive total, got {total:g}")
    controls = [i for i, a in enumerate(arms) if a.control]
    if not controls:
        raise ValueError("arms: no arm is marked control: true (exactly one must be)")
    if len(controls) > 1:
        raise ValueError(
            f"arms: {len(controls)} arms are marked control (arms {controls}); exactly one must be"
        )
    if arms[controls[0]].weight <= 0:
        raise ValueError(f"arms[{controls[0]}].weight: the control arm needs a weight above 0")


def _check_unique(field: str, names: list[str], taken: set[str]) -> None:
    seen = set(taken)
    for i, name in enumerate(names):
        if name in seen:
            raise ValueError(
                f"{field}[{i}].name: {name!r} is used twice (arm and shadow names must be unique)"
            )
        seen.add(name)


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
