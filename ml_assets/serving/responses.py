"""The TensorFlow Serving shapes of the status and metadata answers."""

from __future__ import annotations

from ml_assets.serving.inputs import SIGNATURE_NAME

OUTPUT_NAME = "probability"


def version_status(version: int, state: str, code: str = "OK", message: str = "") -> dict:
    return {
        "version": str(version),
        "state": state,
        "status": {"error_code": code, "error_message": message},
    }


def failed_statuses(failures: dict[int, str]) -> list[dict]:
    """Versions that failed to load or were refused: END, with the registry's reason."""
    return [
        version_status(version, "END", "UNKNOWN", message)
        for version, message in sorted(failures.items())
    ]


def _tensor(name: str, dtype: str) -> dict:
    return {
        "dtype": dtype,
        "tensor_shape": {"dim": [{"size": "-1", "name": ""}], "unknown_rank": False},
        "name": name,
    }


def metadata(name: str, version: int, numeric: list[str], categorical: list[str]) -> dict:
    inputs = {feature: _tensor(feature, "DT_FLOAT") for feature in numeric}
    inputs.update({feature: _tensor(feature, "DT_STRING") for feature in categorical})
    signature = {
        "inputs": inputs,
        "outputs": {OUTPUT_NAME: _tensor(OUTPUT_NAME, "DT_FLOAT")},
        "method_name": "tensorflow/serving/predict",
    }
    return {
        "model_spec": {"name": name, "signature_name": SIGNATURE_NAME, "version": str(version)},
        "metadata": {"signature_def": {"signature_def": {SIGNATURE_NAME: signature}}},
    }


__all__ = ["OUTPUT_NAME", "failed_statuses", "metadata", "version_status"]
