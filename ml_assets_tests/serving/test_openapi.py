"""GET /openapi.json describes what the server accepts: the champion's features and limits."""

from __future__ import annotations

import json

from ml_assets.serving import ServingLimits
from ml_assets_tests.serving.helpers import NAME, publish, serving, wait_for


def test_openapi_describes_the_champion_features_and_limits(
    store, keras_model, rows, tmp_path
):
    limits = ServingLimits(max_instances=50)
    with serving(store, limits=limits, poll_interval=0.05) as (client, registry):
        empty = client.get("/openapi.json")
        assert empty.status_code == 200
        assert empty.json()["components"]["schemas"]["Instance"]["type"] == "object"
        version = publish(store, keras_model, tmp_path)
        wait_for(lambda: registry.current is not None, what="the champion to load")
        document = client.get("/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    assert f"now version {version}, keras" in document["info"]["description"]
    predict = document["paths"][f"/v1/models/{NAME}:predict"]["post"]
    assert set(predict["responses"]) == {"200", "400", "404", "408", "413", "415", "503"}
    schemas = document["components"]["schemas"]
    instance = schemas["Instance"]
    columns = keras_model.columns
    assert instance["required"] == [*columns.numeric, *columns.categorical]
    for name in columns.numeric:  # the Keras model computes in float32
        assert instance["properties"][name]["maximum"] == 3.4028234663852886e38
    for name in columns.categorical:
        assert instance["properties"][name]["type"] == ["string", "integer", "null"]
    assert schemas["PredictRequest"]["properties"]["instances"]["maxItems"] == 50
    version_parameter = document["paths"][f"/v1/models/{NAME}/versions/{{version}}:predict"][
        "post"
    ]["parameters"][0]
    assert version_parameter["schema"]["maxLength"] == 19
    # Every sample row fits the published schema's types.
    for row in rows[:20]:
        for name, schema in instance["properties"].items():
            kinds = {"number": (int, float), "string": str, "integer": int, "null": type(None)}
            assert isinstance(row[name], tuple(kinds[k] for k in schema["type"])), (name, row)
    json.dumps(document, allow_nan=False)  # strict JSON
