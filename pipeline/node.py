"""A stage node: its bus session (with a Last Will that tells the coordinator it died) and its stage worker."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from broker import topics
from broker.client import BusClient, Will
from broker.config import BusConfig
from broker.messages.pipeline import StageGone
from models.loaded import LoadedModel
from models.store import ModelStore
from pipeline.stage import PipelineStage

logger = logging.getLogger(__name__)


@dataclass
class StageNode:
    node_id: str
    bus: BusClient
    stage: PipelineStage

    def stop(self) -> None:
        """Leave cleanly; the Will is sent too, so a coordinator using this stage moves its layers at once."""
        self.stage.stop()
        self.bus.close(send_will=True)

    def crash(self) -> None:
        """Vanish without a goodbye, as a killed process would (tests, benchmarks): the broker sends the Will."""
        self.bus.abort()
        self.stage.stop(timeout_s=0.5)


def start_stage_node(node_id: str, bus_config: BusConfig, store: ModelStore, *, verify_weights: bool = True,
                     on_model_loaded: Callable[[LoadedModel], None] | None = None,
                     after_compute: Callable[[float, float], None] | None = None) -> StageNode:
    """Connect as `node_id` (its credentials from `bus_config`) with a StageGone Will, and start its stage.

    Raises BusError when the broker cannot be reached or refuses the node.
    """
    bd_seq = time.time_ns() // 1000  # grows with every session of the stage
    # The stage's own Will and client id: it may run beside the node's edge process, whose membership
    # session (and death) is the edge's; the broker user is the node's either way (ACLs by node).
    will = Will(topics.PIPELINE_REPORT.topic(node=node_id), StageGone(node_id, bd_seq), qos=1)
    bus = BusClient(f"{node_id}-stage", bus_config.for_node(node_id), will=will).connect()
    stage = PipelineStage(node_id, bus, store, bd_seq=bd_seq, verify_weights=verify_weights,
                          on_model_loaded=on_model_loaded, after_compute=after_compute).start()
    return StageNode(node_id, bus, stage)
