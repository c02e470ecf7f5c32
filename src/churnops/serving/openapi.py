"""The OpenAPI document, with the prediction request schemas written from the loaded model's spec.

`features` lists the champion's own feature names (numbers or null for numerical features,
any scalar for categorical ones) and forbids every other name, as the server does (422). The
schemas live in `components` under the names the prediction routes reference, so no `$ref`
dangles. The document is rebuilt when the champion's feature set changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi.openapi.utils import get_openapi

if TYPE_CHECKING:
    from fastapi import FastAPI
    from fastapi.routing import APIRoute

    from churnops.serving.scorer import FeatureRules

NUMBER = {"anyOf": [{"type": "number"}, {"type": "null"}]}
SCALAR = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}, {"type": "null"}]}


def operation_id(route: APIRoute) -> str:
    """`predictions-predict`, not FastAPI's default `predict_v1_predict_post`: generated clients name
    their methods after it (FastAPI's own recommendation for SDK generation: tag, then function)."""
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def request_body(name: str) -> dict[str, Any]:
    """`openapi_extra` of a route whose raw body is the component `name`."""
    ref = {"$ref": f"#/components/schemas/{name}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": ref}}}}


def prediction_schemas(rules: FeatureRules | None, max_instances: int) -> dict[str, Any]:
    if rules is None:  # no model loaded yet: any scalar under any name
        features: dict[str, Any] = {"type": "object", "additionalProperties": SCALAR}
    else:
        properties = {name: NUMBER if name in rules.numerical else SCALAR for name in sorted(rules.known)}
        features = {"type": "object", "properties": properties, "additionalProperties": False}
    features["description"] = "Overrides or completes the stored vector; unknown feature names are refused."
    predict = {
        "type": "object",
        "additionalProperties": False,
        "required": ["customer_id"],
        "properties": {
            "customer_id": {"type": "string", "minLength": 1, "maxLength": 128, "examples": ["C0000042"]},
            "features": {"anyOf": [{"$ref": "#/components/schemas/Features"}, {"type": "null"}]},
        },
    }
    batch = {
        "type": "object",
        "additionalProperties": False,
        "required": ["instances"],
        "properties": {
            "instances": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_instances,
                "items": {"$ref": "#/components/schemas/PredictRequest"},
            }
        },
    }
    return {"Features": features, "PredictRequest": predict, "BatchRequest": batch}


def install(app: FastAPI, rules_of: Callable[[], FeatureRules | None], max_instances: int) -> None:
    """Replace `app.openapi` with one that writes the spec's features into the document."""
    built: dict[str, Any] = {}

    def openapi() -> dict[str, Any]:
        rules = rules_of()
        version = tuple(sorted(rules.known)) if rules is not None else None
        if built.get("version") == version and "schema" in built:
            cached: dict[str, Any] = built["schema"]
            return cached
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        schema.setdefault("components", {}).setdefault("schemas", {}).update(
            prediction_schemas(rules, max_instances)
        )
        built.update(version=version, schema=schema)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
