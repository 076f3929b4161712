"""The msgpack codec: round trips, and a clear MessageError for everything malformed."""

import msgpack
import pytest

from broker.errors import MessageError
from broker.messages import (
    Capabilities,
    Heartbeat,
    LoadedModelStatus,
    MetricBatch,
    MetricPoint,
    NodeBirth,
    NodeDeath,
    TaskDispatch,
    TaskResult,
    TaskSpec,
    TokenRecord,
    decode,
)


def _birth(**changes):
    fields = dict(
        node_id="pi-01",
        role="edge",
        bd_seq=7,
        capabilities=Capabilities(cores=4, memory_bytes=4 << 30, gflops=5.5),
        timestamp=1700000000.0,
        models_in_store=("smollm2-135m-fp32",),
        loaded_models=(LoadedModelStatus(model_id="smollm2-135m-fp32", bytes=540_000_000, expires_at=None),),
    )
    fields.update(changes)
    return NodeBirth(**fields)


@pytest.mark.parametrize(
    "message",
    [
        _birth(),
        NodeDeath(node_id="pi-01", bd_seq=3),
        Heartbeat(
            node_id="pi-02", bd_seq=1, seq=5, timestamp=1.5, cpu_percent=37.5, memory_percent=40.0,
            memory_used_bytes=123, load_avg_1m=0.7, queue_depth=2, counters={"malformed": 1.0},
        ),
        TaskDispatch(round_id=3, tasks=(TaskSpec(task_id="t1", task_type="QA", prompt="Q?", model_id="m"),), sent_at=2.0),
        TaskResult(
            task_id="t1", node_id="pi-01", status="ok", answer="Paris", parsed={"label": "happy", "tags": ["O", "B-PER"]},
            tokens=(TokenRecord(position=10, token_id=42, latency_ms=12.5, decided_by="cloud", layer=30, bytes_up=1152),),
        ),
        MetricBatch(node_id="pi-01", points=(MetricPoint("heartbeat", {"node": "pi-01"}, {"cpu": 1.5, "ok": True}, 1),)),
    ],
)
def test_round_trip_preserves_every_field(message):
    assert decode(message.to_bytes()) == message
    assert type(message).from_bytes(message.to_bytes()) == message


def test_garbage_bytes_raise_message_error():
    for garbage in [b"", b"\xc1", b"\x93\x01\x02", b"not msgpack at all", bytes(range(256))]:
        with pytest.raises(MessageError):
            decode(garbage)


def test_non_map_payload_is_rejected():
    with pytest.raises(MessageError, match="must be a map"):
        decode(msgpack.packb([1, 2, 3]))


def test_unknown_type_tag_is_rejected():
    with pytest.raises(MessageError, match="unknown message type"):
        decode(msgpack.packb({"t": "launch_missiles", "v": 1}))


def test_wrong_version_is_rejected_with_both_versions_named():
    body = {"t": "node_death", "v": 99, "node_id": "pi-01", "bd_seq": 1}
    with pytest.raises(MessageError, match="unsupported version 99"):
        decode(msgpack.packb(body))


def test_missing_required_field_is_named():
    with pytest.raises(MessageError, match="missing required field 'bd_seq'"):
        decode(msgpack.packb({"t": "node_death", "v": 1, "node_id": "pi-01"}))


def test_wrong_field_type_is_named_with_its_path():
    birth = msgpack.unpackb(_birth().to_bytes())
    birth["capabilities"]["cores"] = "four"
    with pytest.raises(MessageError, match=r"node_birth\.capabilities\.cores: expected an integer"):
        decode(msgpack.packb(birth))


def test_out_of_range_value_is_rejected():
    with pytest.raises(MessageError, match="bd_seq out of range"):
        decode(msgpack.packb({"t": "node_death", "v": 1, "node_id": "pi-01", "bd_seq": -5}))


def test_nan_is_rejected():
    beat = msgpack.unpackb(
        Heartbeat(node_id="pi-01", bd_seq=1, seq=1, timestamp=1.0, cpu_percent=1.0, memory_percent=1.0,
                  memory_used_bytes=1, load_avg_1m=0.0).to_bytes()
    )
    beat["load_avg_1m"] = float("nan")
    with pytest.raises(MessageError, match="not finite"):
        decode(msgpack.packb(beat))


def test_unknown_field_is_rejected():
    body = {"t": "node_death", "v": 1, "node_id": "pi-01", "bd_seq": 1, "extra": 1}
    with pytest.raises(MessageError, match="unknown fields"):
        decode(msgpack.packb(body))


def test_invalid_node_id_is_rejected_on_decode():
    body = {"t": "node_death", "v": 1, "node_id": "pi/01/../center", "bd_seq": 1}
    with pytest.raises(MessageError, match="invalid node id"):
        decode(msgpack.packb(body))


def test_oversized_payload_is_refused_before_parsing():
    huge = NodeDeath.MAX_BYTES + 1
    body = msgpack.packb({"t": "node_death", "v": 1, "node_id": "pi-01", "bd_seq": 1, "pad": "x" * huge})
    with pytest.raises(MessageError, match="over the cap"):
        NodeDeath.from_bytes(body)


def test_encoding_an_oversized_message_raises():
    with pytest.raises(MessageError, match="over the cap"):
        _birth(models_in_store=tuple(f"model-{i:04d}-" + "x" * 300 for i in range(999))).to_bytes()


def test_from_bytes_refuses_another_message_type():
    with pytest.raises(MessageError, match="expected 'node_birth'"):
        NodeBirth.from_bytes(NodeDeath(node_id="pi-01", bd_seq=1).to_bytes())


def test_failed_result_must_carry_an_error():
    with pytest.raises(ValueError, match="must carry an error"):
        TaskResult(task_id="t", node_id="pi-01", status="error")


def test_metric_fields_keep_int_and_float_apart_through_the_codec():
    from broker.messages.metrics import MetricPoint

    point = MetricPoint("task", {"node": "pi-01"}, {"tokens": 10, "latency_ms": 2.0, "ok": True, "id": "t"}, 5)
    fields = MetricPoint.from_bytes(point.to_bytes()).fields
    assert [type(fields[k]) for k in ("tokens", "latency_ms", "ok", "id")] == [int, float, bool, str]


def test_a_field_left_at_its_none_default_is_not_sent_and_comes_back_none():
    from broker.messages.inference import ContextChunk

    plain = ContextChunk("s", 3, 0, 1, 8, bytes(16), "fp16", 0, "w")
    asking = ContextChunk("s", 3, 0, 1, 8, bytes(16), "fp16", 0, "w", ask_request_id=5, ask_position=0)
    assert "ask_request_id" not in msgpack.unpackb(plain.to_bytes())
    assert decode(plain.to_bytes()) == plain and decode(asking.to_bytes()) == asking
    assert len(asking.to_bytes()) > len(plain.to_bytes())
