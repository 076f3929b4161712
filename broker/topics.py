"""The fleet's topic tree: every topic is built and parsed here, bound to its message type, QoS and retain flag.

No other module writes a topic string. A `TopicSpec` is a pattern such as `nodes/{node}/birth`
under the prefix `fleet/v1`; `spec.topic(node="pi-01")` builds a concrete topic, `spec.filter()`
builds the subscription filter (parameters become `+`), and `parse(topic)` maps a received topic
back to its spec and parameters.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from broker.errors import TopicError
from broker.messages.codec import Message
from broker.messages.inference import CloudDownMessage, CloudRequest, EdgeUpMessage
from broker.messages.membership import CenterState, Heartbeat, NodeBirth, NodeCommand, NodeDeath
from broker.messages.metrics import MetricBatch
from broker.messages.tasks import ModelStatus, TaskDispatch, TaskResult

logger = logging.getLogger(__name__)

PREFIX = "fleet/v1"
SHARED_GROUP = "cloud"  # shared-subscription group of cloud workers

_PARAM = re.compile(r"\{(\w+)\}")
_LEVEL = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One kind of topic: its pattern, payload type and delivery flags."""

    pattern: str  # under PREFIX, parameters in braces
    message: type[Message] | None  # None: raw payload (e.g. replies, whose type the request decides)
    qos: int
    retain: bool = False

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(_PARAM.findall(self.pattern))

    def topic(self, **params: str) -> str:
        """Concrete topic. Raises TopicError for a missing, extra or malformed parameter."""
        if set(params) != set(self.params):
            raise TopicError(f"{self.pattern}: expected parameters {self.params}, got {tuple(params)}")
        for name, value in params.items():
            if not isinstance(value, str) or not _LEVEL.match(value):
                raise TopicError(f"{self.pattern}: parameter {name}={value!r} is not a valid topic level")
        return f"{PREFIX}/{self.pattern.format(**params)}"

    def acl(self, **params: str) -> str:
        """Topic pattern for a Mosquitto ACL line: given parameters verbatim (e.g. `%u`), others '+'."""
        filled = {name: params.get(name, "+") for name in self.params}
        return f"{PREFIX}/{self.pattern.format(**filled)}"

    def filter(self, **params: str) -> str:
        """Subscription filter: given parameters are fixed, the others become '+'."""
        filled = {name: params.get(name, "+") for name in self.params}
        for name, value in params.items():
            if name not in filled or not _LEVEL.match(value):
                raise TopicError(f"{self.pattern}: bad filter parameter {name}={value!r}")
        return f"{PREFIX}/{self.pattern.format(**filled)}"


CENTER_STATE = TopicSpec("state/center", CenterState, qos=1, retain=True)
NODE_BIRTH = TopicSpec("nodes/{node}/birth", NodeBirth, qos=1, retain=True)
# Retained (DESIGN.md said not): a center that starts late must see deaths too; bdSeq orders them.
NODE_DEATH = TopicSpec("nodes/{node}/death", NodeDeath, qos=1, retain=True)
NODE_HEARTBEAT = TopicSpec("nodes/{node}/heartbeat", Heartbeat, qos=0)
NODE_COMMAND = TopicSpec("nodes/{node}/cmd", NodeCommand, qos=1)
TASK_DISPATCH = TopicSpec("tasks/{node}/dispatch", TaskDispatch, qos=1)
TASK_RESULT = TopicSpec("tasks/{node}/result", TaskResult, qos=1)
MODEL_STATUS = TopicSpec("models/{node}/status", ModelStatus, qos=1)
METRICS = TopicSpec("metrics/{node}", MetricBatch, qos=0)
REPLY = TopicSpec("reply/{client}", None, qos=1)  # MQTT 5 response topic of each client
# Collaborative inference (CE-CoLLM). The edge id is a topic level so the broker's ACL can keep an
# edge inside its own sessions; DESIGN.md's `infer/{session}/...` gained it (docs/design-changes.md).
INFER_OPEN = TopicSpec("infer/open", CloudRequest, qos=1)  # shared subscription of cloud workers
INFER_UP = TopicSpec("infer/{edge}/{session}/up", EdgeUpMessage, qos=1)
INFER_DOWN = TopicSpec("infer/{edge}/{session}/down", CloudDownMessage, qos=1)

ALL_TOPICS: list[TopicSpec] = [
    CENTER_STATE, NODE_BIRTH, NODE_DEATH, NODE_HEARTBEAT, NODE_COMMAND,
    TASK_DISPATCH, TASK_RESULT, MODEL_STATUS, METRICS, REPLY, INFER_OPEN, INFER_UP, INFER_DOWN,
]


def register(spec: TopicSpec) -> TopicSpec:
    """Add a topic kind defined in another `broker` module (tasks, inference, metrics)."""
    ALL_TOPICS.append(spec)
    return spec


def shared(filter_: str, group: str = SHARED_GROUP) -> str:
    """MQTT 5 shared-subscription filter: one member of `group` gets each message."""
    return f"$share/{group}/{filter_}"


def parse(topic: str) -> tuple[TopicSpec, dict[str, str]]:
    """Map a concrete topic to its spec and parameters. Raises TopicError if it is not in the tree."""
    if not topic.startswith(PREFIX + "/"):
        raise TopicError(f"topic {topic!r} is outside {PREFIX}/")
    levels = topic[len(PREFIX) + 1 :].split("/")
    for spec in ALL_TOPICS:
        pattern_levels = spec.pattern.split("/")
        if len(pattern_levels) != len(levels):
            continue
        params: dict[str, str] = {}
        for pattern_level, level in zip(pattern_levels, levels, strict=True):
            match = _PARAM.fullmatch(pattern_level)
            if match:
                params[match.group(1)] = level
            elif pattern_level != level:
                break
        else:
            return spec, params
    raise TopicError(f"topic {topic!r} is not in the fleet's topic tree")


# Pipeline inference (issue 18, broker/messages/pipeline.py). A stage reads its control topic and what
# other stages address to it, and writes only as itself (broker/acl.py).
from broker.messages.pipeline import KvChunk, StageControl, StageLink, StageReport  # noqa: E402

PIPELINE_CONTROL = register(TopicSpec("pipeline/{node}/control", StageControl, qos=1))
PIPELINE_REPORT = register(TopicSpec("pipeline/{node}/report", StageReport, qos=1))
PIPELINE_LINK = register(TopicSpec("pipeline/{run}/link/{source}/{target}", StageLink, qos=1))
PIPELINE_KV = register(TopicSpec("pipeline/{run}/kv/{source}/{target}", KvChunk, qos=1))
