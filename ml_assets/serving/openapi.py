"""An OpenAPI 3.1 description of the serving API, served at GET /openapi.json.

Built from the loaded champion (its features, the float range of its flavor) and the
`ServingLimits`, so a client (or a schema-based fuzzer such as Schemathesis) sees what the server
accepts: the same rules `serving.inputs` enforces.
"""

from __future__ import annotations

from typing import Any

from ml_assets.serving.inputs import MAX_VERSION, SIGNATURE_NAME, ServingLimits, float_max

_ERRORS = {
    "400": "malformed request: JSON, a type, a missing feature, a number outside the model's "
    "float range, a version that is not a decimal int64, or a model output that is not finite",
    "404": "unknown model, version or label",
    "408": "request headers or body not received in time (connection closed)",
    "413": "body over max_body_bytes, or more instances than max_instances",
    "415": "content-type is not JSON",
    "503": "the version failed to load, or no version is loaded (the reasons are listed)",
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _instance_schema(
    numeric: list[str] | None, categorical: list[str] | None, flavor: str | None
) -> dict:
    if numeric is None or categorical is None:  # no champion loaded: features unknown
        return {"type": "object", "description": "{feature: value}, one entry per feature"}
    top = float_max(flavor or "")
    properties: dict[str, Any] = {
        feature: {"type": ["number", "null"], "minimum": -top, "maximum": top}
        for feature in numeric
    }
    properties.update({feature: {"type": ["string", "integer", "null"]} for feature in categorical})
    return {
        "type": "object",
        "properties": properties,
        "required": [*numeric, *categorical],
        "additionalProperties": True,  # ignored, as batch scoring ignores them
    }


def describe(
    name: str,
    limits: ServingLimits,
    *,
    numeric: list[str] | None = None,
    categorical: list[str] | None = None,
    flavor: str | None = None,
    version: int | None = None,
) -> dict:
    """The OpenAPI document for model `name` (features from the champion when one is loaded)."""
    instance = _instance_schema(numeric, categorical, flavor)
    features = [*(numeric or []), *(categorical or [])]
    columnar = {
        "type": "object",
        "properties": {
            f: {"type": "array", "items": instance["properties"][f], "minItems": 1,
                "maxItems": limits.max_instances}
            for f in features
        } if features else {},
        "required": features,
    }
    request = {
        "type": "object",
        "properties": {
            "signature_name": {"const": SIGNATURE_NAME},
            "instances": {"type": "array", "items": _ref("Instance"), "minItems": 1,
                          "maxItems": limits.max_instances},
            "inputs": _ref("Columnar"),
        },
        "oneOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
    }
    probabilities = {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}}
    errors = {code: _json(_ref("Error"), text) for code, text in _ERRORS.items()}
    predict = {
        "summary": "P(label = 1) per instance",
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": _ref("PredictRequest")}}},
        "responses": {
            "200": _json({"oneOf": [
                {"type": "object", "properties": {"predictions": probabilities},
                 "required": ["predictions"]},
                {"type": "object", "properties": {"outputs": probabilities},
                 "required": ["outputs"]},
            ]}, "one probability per instance (outputs for the columnar format)"),
            **errors,
        },
    }
    version_parameter = {
        "name": "version",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$", "maxLength": 19},
        "description": f"a decimal integer up to {MAX_VERSION}",
    }
    status = {"responses": {"200": _json({"type": "object"}, "TF Serving model status"),
                            **errors}}
    base = f"/v1/models/{name}"
    champion = "" if version is None else f" (now version {version}, {flavor})"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"ml_assets serving: model {name}",
            "version": "1",
            "description": "The TensorFlow Serving REST API for the champion" + champion + ". "
            f"Limits: {limits.max_instances} instances, {limits.max_body_bytes} bytes per "
            f"request; headers within {limits.header_timeout_s:g} s, body within "
            f"{limits.body_timeout_s:g} s. NaN in a numeric feature means missing; responses "
            "never contain NaN or infinities.",
        },
        "paths": {
            f"{base}:predict": {"post": predict},
            f"{base}/versions/{{version}}:predict": {
                "post": {**predict, "parameters": [version_parameter]}
            },
            f"{base}/labels/champion:predict": {"post": predict},
            base: {"get": status},
            f"{base}/versions/{{version}}": {"get": {**status, "parameters": [version_parameter]}},
            f"{base}/metadata": {"get": {"responses": {
                "200": _json({"type": "object"}, "signature_def: one input per feature"),
                **errors}}},
            "/healthz": {"get": {"responses": {"200": _json({"type": "object"}, "liveness")}}},
        },
        "components": {
            "schemas": {
                "Instance": instance,
                "Columnar": columnar,
                "PredictRequest": request,
                "Error": {"type": "object", "properties": {"error": {"type": "string"}},
                          "required": ["error"]},
            }
        },
    }


__all__ = ["describe"]
