"""Cells' bus payloads: framings, gob, protobuf schema and Go protojson rules, against golden fixtures.

The fixtures (``tests/data/cells``, copied from the Cells research notes) were made by real
encoders: Go ``encoding/gob``, Go protobuf and Go ``protojson``. Each payload must decode to the
message the Go encoder printed, field order and spacing included; the framings Cells uses
elsewhere (queue form, Any-wrapped bodies) must decode the same; anything else raises BadEvent.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.any_pb2 import Any as AnyMessage
from hypothesis import given
from hypothesis import strategies as st

from gateway.cells import envelope, gob, protojson
from gateway.cells.codec import CellsCodec
from gateway.cells.schema import activity_pb2, jobs_pb2, tree_pb2
from gateway.events.codec import BadEvent, JsonCodec
from gateway.topics import TASKS_TOPIC, TREE_TOPIC
from tests.helpers import fixed_cases

DATA = Path(__file__).parent / "data" / "cells"
FIXTURES: list[dict[str, Any]] = json.loads((DATA / "fixtures.json").read_text())["fixtures"]
SCHEMA = Path(__file__).parent.parent / "gateway" / "cells" / "schema"


def payload(fixture: dict[str, Any]) -> bytes:
    return (DATA / str(fixture["file"])).read_bytes()


def body(fixture: dict[str, Any]) -> bytes:
    return (DATA / str(fixture["body_file"])).read_bytes()


def go_spacing(obj: Any) -> str:
    """JSON with the separators the fixtures' Go binary used (Go varies them per build)."""
    return json.dumps(obj, separators=(", ", ":"), ensure_ascii=False)


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f["name"] for f in FIXTURES])
def test_codec_fixture_decodes_to_go_protojson(fixture: dict[str, Any]) -> None:
    event = CellsCodec().decode(fixture["topic"], payload(fixture))
    assert event == fixture["message_protojson"]
    assert go_spacing(event) == fixture["go_protojson_raw"]  # declaration order, float and int64 forms


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f["name"] for f in FIXTURES])
def test_codec_fixture_envelope_matches(fixture: dict[str, Any]) -> None:
    framed = envelope.unwrap(payload(fixture))
    assert framed.body == body(fixture)
    assert framed.metadata == fixture["metadata"]
    assert framed.framing == ("gob" if fixture["envelope"] == "gob" else "bare")


CHAT_FIXTURES = [f for f in FIXTURES if f["topic"] == "topic.pydio.chat.event"]


@pytest.mark.parametrize("fixture", CHAT_FIXTURES, ids=[f["name"] for f in CHAT_FIXTURES])
def test_codec_chat_fixture_gives_the_frame_cells_sends(fixture: dict[str, Any]) -> None:
    """Cells' chat handler: a DELETE detail -> DELETE_MSG, a room -> ROOM_UPDATE, else the message."""
    event = CellsCodec().decode(fixture["topic"], payload(fixture))
    if event.get("Details") == "DELETE":
        frame = {"@type": "DELETE_MSG", "Message": event["Message"]}
    elif "Room" in event:
        frame = {"@type": "ROOM_UPDATE", "Room": event["Room"]}
    else:
        frame = event["Message"]
    assert frame == fixture["expected_ws"][0]["json"]


# -- the queue framing and Any-wrapped bodies ---------------------------------------------------


def queue_form(metadata: dict[str, str] | None, data: bytes) -> bytes:
    meta = json.dumps(metadata).encode() if metadata is not None else b""
    return struct.pack("<I", len(meta)) + meta + struct.pack("<I", len(data)) + data


def wrapped(message_name: str, data: bytes) -> bytes:
    return AnyMessage(type_url=f"type.googleapis.com/{message_name}", value=data).SerializeToString()


TASK = next(f for f in FIXTURES if f["name"] == "task_running")
TASK_TYPE = "jobs.TaskChangeEvent"


@pytest.mark.parametrize(
    ("framed", "framing"),
    [
        pytest.param(queue_form({"broker_encoding": "raw", "X-Pydio-User": "alice"}, body(TASK)), "queue",
                     id="v5_raw"),
        pytest.param(queue_form({"broker_encoding": "any"}, wrapped(TASK_TYPE, body(TASK))), "queue",
                     id="v5_any"),
        pytest.param(queue_form(None, wrapped(TASK_TYPE, body(TASK))), "queue", id="v4_any_no_metadata"),
        pytest.param(queue_form({}, body(TASK)), "queue", id="v4_raw_empty_metadata"),
        pytest.param(body(TASK), "bare", id="bare"),
        pytest.param(payload(TASK), "gob", id="gob"),
    ],
)  # fmt: skip
def test_codec_every_framing_gives_the_same_event(framed: bytes, framing: str) -> None:
    assert envelope.unwrap(framed).framing == framing
    assert CellsCodec().decode(TASKS_TOPIC, framed) == TASK["message_protojson"]


def test_codec_any_naming_another_type_is_not_unwrapped() -> None:
    other = queue_form({"broker_encoding": "any"}, wrapped("idm.ChangeEvent", body(TASK)))
    with pytest.raises(BadEvent):
        CellsCodec().decode(TASKS_TOPIC, other)


# -- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xff\xff\xff", id="truncated_varint"),
        pytest.param(b"\x0a\x05abc", id="truncated_field"),
        pytest.param(b"\x08\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", id="varint_too_long"),
        pytest.param(b'{"Type":"CREATE"}', id="json_instead_of_protobuf"),
    ],
)
def test_codec_bad_payload_is_bad_event(data: bytes) -> None:
    with pytest.raises(BadEvent):
        CellsCodec().decode(TREE_TOPIC, data)


def test_codec_unknown_topic_is_bad_event() -> None:
    with pytest.raises(BadEvent, match="no Cells message type"):
        CellsCodec().decode("topic.pydio.other", b"")


def test_codec_unknown_fields_are_dropped_like_unknown_schema() -> None:
    """A field this schema leaves out (e.g. a job's selectors) decodes as unknown and is not sent."""
    known = jobs_pb2.TaskChangeEvent(NanoStamp=5).SerializeToString()
    unknown_field_99 = b"\xa2\x06\x03abc"  # field 100, length-delimited
    assert CellsCodec().decode(TASKS_TOPIC, known + unknown_field_99) == {"NanoStamp": "5"}


@given(st.binary(max_size=300))
@fixed_cases(500)
def test_codec_any_bytes_decode_or_raise_bad_event(data: bytes) -> None:
    try:
        event = CellsCodec().decode(TREE_TOPIC, data)
    except BadEvent:
        return
    assert isinstance(event, dict)


@given(st.binary(max_size=200))
@fixed_cases(500)
def test_gob_any_bytes_decode_or_raise_gob_error(data: bytes) -> None:
    try:
        metadata, rest = gob.decode(data)
    except gob.GobError:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    assert isinstance(rest, bytes)


def test_gob_round_trip_of_every_gob_fixture() -> None:
    for fixture in FIXTURES:
        if fixture["envelope"] == "gob":
            assert gob.decode(payload(fixture)) == (fixture["metadata"], body(fixture))


def test_gob_long_lengths_use_the_negated_byte_count() -> None:
    """A body over 127 bytes has a multi-byte length (``fe 01 11`` = 273)."""
    long = next(f for f in FIXTURES if f["envelope"] == "gob" and len(body(f)) > 255)
    assert gob.decode(payload(long))[1] == body(long)


# -- protojson rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("progress", "shown"),
    [(0.42, 0.42), (1.0, 1), (0.1, 0.1), (3.4028234663852886e38, 3.4028235e38), (1e-7, 1e-7), (0.0, None)],
)
def test_protojson_float32_prints_shortest(progress: float, shown: float | None) -> None:
    event = protojson.to_json(jobs_pb2.Task(Progress=progress))
    assert event.get("Progress") == shown
    if shown is not None and float(shown).is_integer() and abs(shown) < 1e21:
        assert isinstance(event["Progress"], int)


def test_protojson_float32_specials() -> None:
    assert protojson.to_json(jobs_pb2.Task(Progress=float("nan")))["Progress"] == "NaN"
    assert protojson.to_json(jobs_pb2.Task(Progress=float("-inf")))["Progress"] == "-Infinity"


def test_protojson_int64_as_string_int32_as_number_and_zero_values_omitted() -> None:
    node = tree_pb2.Node(Uuid="u", Size=2**40, Mode=420, MTime=0, Type=tree_pb2.UNKNOWN)
    assert protojson.to_json(node) == {"Uuid": "u", "Size": str(2**40), "Mode": 420}


def test_protojson_unknown_enum_number_prints_as_number() -> None:
    event = tree_pb2.NodeChangeEvent()
    event.ParseFromString(b"\x08\x2a")  # Type = 42
    assert protojson.to_json(event) == {"Type": 42}


def test_protojson_map_keys_sorted_and_bytes_base64() -> None:
    out = protojson.to_json(jobs_pb2.ActionOutput(RawBody=b"\x00\xff", Vars={"b": "2", "a": "1"}))
    assert list(out) == ["RawBody", "Vars"]
    assert out == {"RawBody": "AP8=", "Vars": {"a": "1", "b": "2"}}


def test_protojson_json_names_and_timestamps() -> None:
    obj = activity_pb2.Object(jsonLdContext="ctx", type=activity_pb2.Update)
    obj.updated.FromJsonString("2024-06-01T12:00:00.500Z")
    assert protojson.to_json(obj) == {
        "@context": "ctx",
        "type": "Update",
        "updated": "2024-06-01T12:00:00.500Z",
    }


def test_protojson_timestamp_out_of_range_is_refused() -> None:
    obj = activity_pb2.Object()
    obj.updated.seconds = 2**62
    with pytest.raises(protojson.ProtoJsonError):
        protojson.to_json(obj)


# -- the gateway's own JSON format --------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"[1]", b'"x"', b"{", b"\xff"])
def test_json_codec_refuses_what_is_not_an_object(data: bytes) -> None:
    with pytest.raises(BadEvent):
        JsonCodec().decode(TREE_TOPIC, data)


@pytest.mark.parametrize(
    "data", [rb'{"Target": {"Path": "/ds/a\ud800"}}', rb'{"\uDFFF": 1}', b'{"Path": "\xed\xa0\x80"}']
)
def test_json_codec_refuses_a_lone_surrogate(data: bytes) -> None:
    # Such an event could be sent to nobody: refused (and counted) as a bad event, not a route error.
    with pytest.raises(BadEvent):
        JsonCodec().decode(TREE_TOPIC, data)
    assert JsonCodec().decode(TREE_TOPIC, rb'{"Path": "\ud83d\ude00"}') == {"Path": "\U0001f600"}


# -- generated code matches the schema ----------------------------------------------------------


def test_schema_generated_code_matches_the_proto_files(tmp_path: Path) -> None:
    """``make proto`` was run after the last .proto change (protoc from grpcio-tools)."""
    pytest.importorskip("grpc_tools", reason="grpcio-tools is part of the dev install")
    root = SCHEMA.parent.parent.parent
    protos = sorted(str(p.relative_to(root)) for p in SCHEMA.glob("*.proto"))
    out = tmp_path / "out"
    out.mkdir()
    command = [sys.executable, "-m", "grpc_tools.protoc", "-I", str(root), f"--python_out={out}",
               f"--pyi_out={out}", *protos]  # fmt: skip
    subprocess.run(command, check=True, cwd=root, capture_output=True)
    generated = sorted((out / "gateway" / "cells" / "schema").iterdir())
    assert [p.name for p in generated] == sorted(p.name for p in SCHEMA.glob("*_pb2.py*"))
    for path in generated:
        assert path.read_text() == (SCHEMA / path.name).read_text(), f"{path.name} is stale: run make proto"
    shutil.rmtree(out)
