"""classify_write: every row of the table in gateway/influx.py (and docs/influxdb-writes.md).

The bodies are the ones InfluxDB 1.x, 2.x and 3.x send, as their docs and
issue threads show them.
"""

from __future__ import annotations

import json
from email.utils import formatdate

import pytest

from gateway.influx import RETRY_AFTER_MAX_S, Action, classify_write, retry_after

V1_PARTIAL = b'{"error":"partial write: points beyond retention policy dropped=1"}'
V1_CONFLICT = b'{"error":"partial write: field type conflict: input field \\"v\\" on measurement \\"m\\" is type string, already exists as type float dropped=1"}'  # noqa: E501
V1_PARSE = b'{"error":"unable to parse \'m v= 1\': missing field value"}'
V2_422 = json.dumps(
    {
        "code": "unprocessable entity",
        "message": "failure writing points to database: partial write: points beyond retention policy dropped=1",
    }
).encode()
V2_500_PARTIAL = json.dumps(
    {
        "code": "internal error",
        "message": "unexpected error writing points to database: "
        "partial write: points beyond retention policy dropped=1",
    }
).encode()
V2_400_PARSE = b'{"code":"invalid","message":"unable to parse \'m v= 1\': missing field value"}'
V3_PARTIAL = json.dumps(
    {
        "error": "partial write of line protocol occurred",
        "data": [
            {
                "original_line": "home,room=Sunroom temp=hi 1735549200",
                "line_number": 2,
                "error_message": "invalid column type for column 'temp', expected iox::column_type::field::float, "
                "got iox::column_type::field::string",
            },
            {"original_line": "cpu,host=a val= 123", "line_number": 5, "error_message": "No fields were provided"},
        ],
    }
).encode()
V3_NOT_PARTIAL = json.dumps(
    {
        "error": "parsing failed for write_lp endpoint",
        "data": {"original_line": "m v= 1", "line_number": 3, "error_message": "No fields were provided"},
    }
).encode()


@pytest.mark.parametrize("status", [200, 204])
def test_stored(status: int) -> None:
    assert classify_write(status, {}, b"").action is Action.STORED


def test_no_answer_is_retried() -> None:
    decision = classify_write(0, {}, b"")
    assert (decision.action, decision.retry_after_s) == (Action.RETRY, None)


def test_3x_partial_write_names_the_lines() -> None:
    decision = classify_write(400, {"Content-Type": "application/json"}, V3_PARTIAL)
    assert decision.action is Action.DROP_BAD_POINTS
    assert [n for n, _ in decision.line_errors] == [2, 5]
    assert "invalid column type for column 'temp'" in decision.line_errors[0][1]
    assert decision.reason == "partial write of line protocol occurred"


def test_3x_rejected_batch_names_its_line() -> None:
    decision = classify_write(400, {}, V3_NOT_PARTIAL)
    assert (decision.action, decision.line_errors) == (Action.DROP_BAD_POINTS, ((3, "No fields were provided"),))


@pytest.mark.parametrize("data", [[{"line_number": "2"}], "junk", [7], None])
def test_3x_shape_without_usable_line_numbers_falls_back_to_splitting(data: object) -> None:
    body = json.dumps({"error": "partial write of line protocol occurred", "data": data}).encode()
    decision = classify_write(400, {}, body)
    assert (decision.action, decision.line_errors) == (Action.DROP_BAD_POINTS, ())


@pytest.mark.parametrize(
    "body",
    [V1_PARTIAL, V1_CONFLICT, V1_PARSE, V2_400_PARSE, b"partial write: max-series-per-database limit exceeded"],
)
def test_400_naming_bad_points_splits(body: bytes) -> None:
    decision = classify_write(400, {}, body)
    assert (decision.action, decision.line_errors) == (Action.DROP_BAD_POINTS, ())
    assert decision.reason and decision.reason in body.decode().replace('\\"', '"')


@pytest.mark.parametrize(
    "body", [b'{"error":"database is required"}', b'{"code":"invalid","message":"invalid precision"}']
)
def test_400_about_the_request_itself_is_fatal(body: bytes) -> None:
    decision = classify_write(400, {}, body)
    assert decision.action is Action.FATAL
    assert "influx_db" in decision.fix and not decision.database_missing


@pytest.mark.parametrize(
    "status,body",
    [
        (401, b'{"error":"authorization failed"}'),  # 1.x
        (401, b'{"code":"unauthorized","message":"Unauthorized"}'),  # 2.x
        (403, b'{"code":"forbidden","message":"insufficient permissions for write"}'),
    ],
)
def test_auth_is_fatal_and_names_the_credentials(status: int, body: bytes) -> None:
    decision = classify_write(status, {}, body)
    assert decision.action is Action.FATAL
    assert "influx_token" in decision.fix and "influx_username" in decision.fix
    assert not decision.database_missing


@pytest.mark.parametrize(
    "body",
    [b'{"error":"database not found: \\"district\\""}', b'{"code":"not found","message":"bucket \\"d\\" not found"}'],
)
def test_404_is_fatal_database_missing(body: bytes) -> None:
    decision = classify_write(404, {}, body)
    assert (decision.action, decision.database_missing) == (Action.FATAL, True)
    assert "not found" in decision.reason and "bucket" in decision.fix


def test_408_is_retried() -> None:
    assert classify_write(408, {}, b"").action is Action.RETRY


@pytest.mark.parametrize("body", [b'{"error":"Request Entity Too Large"}', b"", b'{"code":"request too large"}'])
def test_413_splits(body: bytes) -> None:
    assert classify_write(413, {}, body).action is Action.DROP_BAD_POINTS


@pytest.mark.parametrize("body", [V2_422, b'{"code":"unprocessable entity","message":"whatever"}', b""])
def test_422_splits_whatever_it_says(body: bytes) -> None:
    decision = classify_write(422, {}, body)
    assert decision.action is Action.DROP_BAD_POINTS
    if body == V2_422:
        assert decision.reason.endswith("points beyond retention policy dropped=1")


def test_429_is_retried_after_what_the_server_asks() -> None:
    decision = classify_write(429, {"Retry-After": "7"}, b'{"code":"too many requests"}')
    assert (decision.action, decision.retry_after_s) == (Action.RETRY, 7.0)
    assert classify_write(429, {}, b"").retry_after_s is None


def test_500_naming_a_partial_write_splits() -> None:
    decision = classify_write(500, {}, V2_500_PARTIAL)
    assert decision.action is Action.DROP_BAD_POINTS
    assert "points beyond retention policy" in decision.reason


@pytest.mark.parametrize(
    "status,body",
    [
        (500, b'{"error":"timeout"}'),
        (500, b'{"error":"engine: cache-max-memory-size exceeded: (1048576/1048576)"}'),
        (500, b'{"code":"internal error","message":"unexpected error writing points to database: timeout"}'),
        (502, b"<html>Bad Gateway</html>"),
        (503, b'{"code":"unavailable","message":"service unavailable"}'),
        (504, b""),
        (507, b""),
    ],
)
def test_other_5xx_are_retried(status: int, body: bytes) -> None:
    decision = classify_write(status, {"retry-after": "2"}, body)
    assert (decision.action, decision.retry_after_s) == (Action.RETRY, 2.0)


@pytest.mark.parametrize("status", [301, 302, 307, 405, 410, 415])
def test_other_statuses_are_fatal(status: int) -> None:
    decision = classify_write(status, {}, b"")
    assert decision.action is Action.FATAL
    assert "influx_url" in decision.fix and str(status) in decision.fix


def test_retry_after_forms() -> None:
    now = 1_700_000_000.0
    assert retry_after({"Retry-After": " 12 "}) == 12.0
    assert retry_after({"Retry-After": formatdate(now + 30, usegmt=True)}, now) == 30.0
    assert retry_after({"Retry-After": formatdate(now - 30, usegmt=True)}, now) == 0.0
    assert retry_after({"Retry-After": "-5"}) == 0.0
    assert retry_after({"Retry-After": "86400"}) == RETRY_AFTER_MAX_S
    assert retry_after({"Retry-After": "soon"}) is None
    assert retry_after({"Retry-After": "nan"}) is None
    assert retry_after({}) is None


def test_classify_never_raises_on_junk() -> None:
    for status in (400, 404, 413, 422, 429, 500, 503, 599, 999):
        for body in (b"\xff\xfe", b"[]", b"null", b'"text"', b"{", b'{"error": null}'):
            assert classify_write(status, {"Retry-After": "\x00"}, body).action in Action
