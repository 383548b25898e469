"""The request contract of `waypost serve`: each feature takes exactly what its OpenAPI schema says.

Lax parsing used to turn ``"year": false`` into 0, ``"46.1"`` into 46.1 and a binary ``"sex": "yes"``
into a silently missing value. Here a real server (uvicorn in a thread, the penguins LightGBM
bundle) is sent each kind of wrong value through /predict, /predict/columns (JSON) and Arrow, and
the served OpenAPI document is checked to accept exactly the bodies the server accepts
(jsonschema_rs, the validator schemathesis uses). Kinds the penguins table lacks (datetime, a
boolean or numeric binary) are checked on the schema built from a fitted state of that shape.
"""
from __future__ import annotations

import datetime
import json

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
pa = pytest.importorskip("pyarrow")
jsonschema_rs = pytest.importorskip("jsonschema_rs")

from servers import ThreadServer  # noqa: E402

from waypost.deploy.bundle import json_records  # noqa: E402
from waypost.serve.app import create_app  # noqa: E402
from waypost.serve.columnar import ARROW_STREAM, parse_arrow  # noqa: E402
from waypost.serve.fields import DATETIME_PATTERN, is_datetime  # noqa: E402
from waypost.serve.schema import RecordSchema, RequestError  # noqa: E402


@pytest.fixture(scope="module")
def server(penguins_bundle):
    with ThreadServer(create_app(penguins_bundle[1])) as s:
        yield s


def _validator(spec: dict, schema: dict):
    """A validator of `schema` whose $refs resolve inside the served document."""
    return jsonschema_rs.validator_for({**schema, "components": spec["components"]})


def _stream(table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


WRONG = {  # field -> (value, what the message must say), each refused today by nothing
    "year": (False, "numeric feature: expected a finite JSON number"),
    "bill_length_mm": ("46.1", "not a string or a boolean"),
    "sex": ("yes", 'expected "female" or "male" (the training values) or null, got "yes"'),
    "island": (True, "category feature: expected a string, a number (not a boolean) or null, got true"),
    "body_mass_g": ([3250], "got an array"),
    "flipper_length_mm": ({"mm": 178}, "got an object"),
}


def test_predict_refuses_each_wrong_type_naming_field_row_and_what_it_expects(penguins_bundle, server):
    _, _, test = penguins_bundle
    good = json_records(test.head(3))
    spec = httpx.get(server.url + "/openapi.json").json()
    body_schema = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    valid = _validator(spec, body_schema)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for field, (value, text) in WRONG.items():
            rows = [good[0], {**good[1], field: value}, good[2]]
            resp = client.post("/predict", json=rows)
            assert resp.status_code == 422, (field, resp.text)
            detail = resp.json()["detail"]
            assert [d["loc"] for d in detail] == [["body", 1, field]], (field, detail)
            assert text in detail[0]["msg"], (field, detail[0]["msg"])
            assert resp.json()["message"].startswith(f"body.1.{field}: "), resp.json()["message"]
            assert not valid.is_valid(rows), field  # the schema says so too
            one = client.post("/predict", json={**good[0], field: value})
            assert one.status_code == 422 and one.json()["detail"][0]["loc"] == ["body", field]
        # JSON numbers beyond float64 and the non-JSON NaN/Infinity literals: refused, never inf in a row
        for raw in ("1e400", "-1e400", "NaN", "Infinity"):
            body = json.dumps(good[0]).replace(f'"year": {good[0]["year"]}', f'"year": {raw}')
            assert raw in body
            resp = client.post("/predict", content=body, headers={"content-type": "application/json"})
            assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["body", "year"], (raw, resp.text)
        # what the contract accepts: integers for numbers, numbers for categories, null anywhere
        accepted = [{**good[0], "year": 2008, "body_mass_g": 4000.5}, {**good[0], "island": 3},
                    {k: None for k in good[0]}, {**good[0], "sex": "male"}]
        for row in accepted:
            resp = client.post("/predict", json=row)
            assert resp.status_code == 200, (row, resp.text)
            assert valid.is_valid(row)


def test_openapi_states_each_fields_contract(server):
    spec = httpx.get(server.url + "/openapi.json").json()
    record = spec["components"]["schemas"]["PredictRecord"]["properties"]
    assert record["year"]["anyOf"] == [{"type": "number"}, {"type": "null"}]
    assert record["island"]["anyOf"] == [{"type": "string"}, {"type": "number"}, {"type": "null"}]
    assert record["sex"]["anyOf"] == [{"type": "string", "enum": ["female", "male"]}, {"type": "null"}]
    example = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["example"]
    assert example["island"] == "Biscoe" and example["sex"] == "female"  # from the fitted state
    assert httpx.post(server.url + "/predict", json=example).status_code == 200  # "Try it out" works
    columns = spec["components"]["schemas"]["PredictColumnsData"]
    assert sorted(columns["required"]) == sorted(record) and columns["additionalProperties"] is False
    for name, prop in columns["properties"].items():
        assert prop["type"] == "array" and prop["minItems"] == 1
        assert prop["items"]["anyOf"] == record[name]["anyOf"], name


def test_columns_json_follow_the_same_contract(penguins_bundle, server):
    _, _, test = penguins_bundle
    records = json_records(test.head(4))
    columns = {c: [r[c] for r in records] for c in records[0]}
    spec = httpx.get(server.url + "/openapi.json").json()
    schema = spec["paths"]["/predict/columns"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    valid = _validator(spec, schema)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        ok = client.post("/predict/columns", json={"columns": columns})
        assert ok.status_code == 200 and valid.is_valid({"columns": columns})
        for field, (value, text) in WRONG.items():
            body = {"columns": {**columns, field: [*columns[field][:2], value, columns[field][3]]}}
            resp = client.post("/predict/columns", json=body)
            assert resp.status_code == 422, (field, resp.text)
            detail = resp.json()["detail"]
            assert [d["loc"] for d in detail] == [["body", "columns", field, 2]], (field, detail)
            assert text in detail[0]["msg"]
            assert not valid.is_valid(body), field
        for body in ({"columns": {}}, {"columns": {**columns, "year": []}}, {"columns": columns, "extra": 1},
                     {"columns": {**columns, "colour": ["red"] * 4}}, {"columns": {**columns, "year": 2007}}):
            resp = client.post("/predict/columns", json=body)
            assert resp.status_code == 422, (body, resp.text)
            assert not valid.is_valid(body), body  # what the schema refuses, the server refuses
        ragged = client.post("/predict/columns", json={"columns": {**columns, "year": columns["year"][:3]}})
        assert ragged.status_code == 422 and "one length" in ragged.json()["message"]  # stated in the description


def test_arrow_columns_follow_the_same_contract(penguins_bundle, server):
    _, _, test = penguins_bundle
    table = pa.Table.from_pandas(test.head(4), preserve_index=False)
    headers = {"content-type": ARROW_STREAM}

    def post(t):
        return httpx.post(server.url + "/predict/columns", content=_stream(t), headers=headers, timeout=10)

    def swap(name, array):
        return table.set_column(table.column_names.index(name), name, array)

    assert post(table).status_code == 200
    cases = {
        "sex": (pa.array(["female", "yes", None, "male"]), 1, "expected \"female\" or \"male\""),
        "year": (pa.array([2007.0, float("inf"), 2008.0, 2009.0]), 1, "expected a finite number"),
    }
    for name, (array, row, text) in cases.items():
        resp = post(swap(name, array))
        assert resp.status_code == 422, (name, resp.text)
        assert resp.json()["detail"][0]["loc"] == ["body", "columns", name, row] and text in resp.json()["message"]
    for name, array, text in (("island", pa.array([True, False, True, True]), "category column expects Arrow strings"),
                              ("year", pa.array([True, False, True, True]), "numeric column expects Arrow integers"),
                              ("sex", pa.array([1, 0, 1, 0]), "binary column expects Arrow strings")):
        resp = post(swap(name, array))
        assert resp.status_code == 422 and text in resp.json()["message"], (name, resp.text)
    # NaN in a float column is a missing value, as null is (pandas writes NaN for missing)
    assert post(swap("year", pa.array([2007.0, float("nan"), None, 2009.0]))).status_code == 200


def test_content_type_must_be_json_or_arrow(penguins_bundle, server):
    _, _, test = penguins_bundle
    body = json.dumps(json_records(test.head(1))[0]).encode()
    with httpx.Client(base_url=server.url, timeout=10) as client:
        cases = [("/predict", None), ("/predict", "text/plain"), ("/predict", "application/x-www-form-urlencoded"),
                 ("/predict", ARROW_STREAM), ("/predict/columns", None), ("/predict/columns", "text/csv")]
        for path, ctype in cases:
            headers = {"content-type": ctype} if ctype else {}
            resp = client.post(path, content=body, headers=headers)
            assert resp.status_code == 415, (path, ctype, resp.text)
            msg = resp.json()["message"]
            takes = "application/json" + (f" or {ARROW_STREAM}" if path == "/predict/columns" else ",")
            assert f"POST {path} takes {takes}" in msg, msg
            assert resp.headers["content-type"] == "application/json"
        ok = client.post("/predict", content=body, headers={"content-type": "Application/JSON; charset=utf-8"})
        assert ok.status_code == 200
        spec = client.get("/openapi.json").json()
    for path in ("/predict", "/predict/columns"):
        assert {"200", "400", "413", "415", "422", "500", "503"} <= set(spec["paths"][path]["post"]["responses"])


# ---- kinds penguins lacks: the schema built from fitted states of that shape ----------------------
STATE = {"kind": "tabular", "columns": [
    {"kind": "datetime", "name": "when", "median": "2020-06-01T00:00:00"},
    {"kind": "binary", "name": "flag", "values": ["False", "True"]},
    {"kind": "binary", "name": "level", "values": ["0", "1"]},
    {"kind": "binary", "name": "size", "values": ["1.5", "2"]},
]}
FEATURES = {"when": "datetime", "flag": "binary", "level": "binary", "size": "binary"}
GOOD = {"when": "2024-02-29T12:00:00Z", "flag": True, "level": 1, "size": 1.5}


def _parse(schema: RecordSchema, row: dict) -> None:
    schema.parse(json.dumps(row).encode())


def test_datetime_and_typed_binaries_take_their_training_values_only():
    schema = RecordSchema(FEATURES, STATE)
    comps = schema.openapi_components()
    valid = jsonschema_rs.validator_for({"$ref": "#/components/schemas/PredictRecord", "components": {"schemas": comps}})
    props = comps["PredictRecord"]["properties"]
    assert props["flag"]["anyOf"][0] == {"type": "boolean", "enum": [False, True]}
    assert props["level"]["anyOf"][0] == {"type": "number", "enum": [0, 1]}
    assert props["size"]["anyOf"][0] == {"type": "number", "enum": [1.5, 2]}
    assert props["when"]["anyOf"][0] == {"type": "string", "pattern": DATETIME_PATTERN}
    accepted = [GOOD, {**GOOD, "level": 1.0, "size": 2}, {**GOOD, "when": "2024-01-31"},
                {**GOOD, "when": "2024-01-31 08:30:15.123456789+05:30"}, {k: None for k in GOOD}]
    refused = {"flag": [1, 0, "True", "yes"], "level": [True, 2, "1"], "size": [1, "2", False],
               "when": ["2023-02-29", "2024-04-31", "01/31/2024", "2024-01-31T24:00", "1500-01-01", 20240131,
                        "2024-01-31\n", "٢٠٢٤-01-31", "yesterday"]}
    for row in accepted:
        _parse(schema, row)
        assert valid.is_valid(row), row
    for field, values in refused.items():
        for value in values:
            row = {**GOOD, field: value}
            with pytest.raises(RequestError) as err:
                _parse(schema, row)
            assert err.value.errors[0]["loc"] == ["body", field], (field, value)
            assert f"{FEATURES[field]} feature: expected" in err.value.errors[0]["msg"]
            assert not valid.is_valid(row), (field, value)
    # Arrow holds the same rules by type: a boolean binary takes booleans, a datetime ISO strings
    ok = pa.table({"when": ["2024-01-31", None], "flag": [True, None], "level": [0, 1], "size": [2.0, 1.5]})
    assert parse_arrow(_stream(ok), schema)[1] == 2
    assert parse_arrow(_stream(ok.set_column(3, "size", pa.array([2, 2]))), schema)[1] == 2  # int64 2 is 2
    for name, array in (("flag", pa.array(["True", "False"])), ("level", pa.array([0, 2])),
                        ("size", pa.array([2, 3])), ("when", pa.array(["2024-01-31", "2024-13-01"]))):
        with pytest.raises(RequestError) as err:
            parse_arrow(_stream(ok.set_column(ok.column_names.index(name), name, array)), schema)
        assert err.value.errors[0]["loc"][:3] == ["body", "columns", name], name


def test_the_datetime_pattern_is_the_calendar_the_runtime_reads():
    """Every date the pattern allows parses in the runtime (no silent NaT), every one it refuses is
    not a date in numpy's nanosecond range: checked over every day of years 1670-2270."""
    from waypost.runtime.features import _parse_one

    day, end = datetime.date(1670, 1, 1), datetime.date(2270, 12, 31)
    allowed = 0
    while day <= end:
        s = day.isoformat()
        assert is_datetime(s) == (1678 <= day.year <= 2261), s
        if 1678 <= day.year <= 2261:
            allowed += 1
            assert not np.isnat(_parse_one(s + "T23:59:59.5-14:00" if day.day == 1 else s)), s
        day += datetime.timedelta(days=1)
    for bad in ("2023-02-29", "1900-02-29", "2100-02-29", "2024-06-31"):
        assert not is_datetime(bad), bad
    assert is_datetime("2000-02-29") and is_datetime("2024-02-29") and allowed == 213_301
