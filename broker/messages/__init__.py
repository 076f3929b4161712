"""Every message type on the bus, each a frozen dataclass with a versioned msgpack codec."""

from broker.messages.codec import Message, decode
from broker.messages.membership import (
    Capabilities,
    CenterState,
    Heartbeat,
    LoadedModelStatus,
    ModelId,
    NodeBirth,
    NodeCommand,
    NodeDeath,
    NodeId,
)

__all__ = [
    "Capabilities",
    "CenterState",
    "Heartbeat",
    "LoadedModelStatus",
    "Message",
    "ModelId",
    "NodeBirth",
    "NodeCommand",
    "NodeDeath",
    "NodeId",
    "decode",
]

from broker.messages.metrics import MetricBatch, MetricPoint
from broker.messages.tasks import ModelStatus, TaskDispatch, TaskResult, TaskSpec, TokenRecord

__all__ += ["MetricBatch", "MetricPoint", "ModelStatus", "TaskDispatch", "TaskResult", "TaskSpec", "TokenRecord"]

from broker.messages.inference import ContextChunk  # noqa: E402

__all__ += ["ContextChunk"]
