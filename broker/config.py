"""How a node reaches the broker: the bus's own settings, one section (`bus`) of every role's config."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from emulation.link_profiles import get_profile
from runtime.settings import FLEET_DIR, check

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BusConfig:
    """How a node reaches the broker."""

    host: str = "127.0.0.1"  # broker address; a Pi points this at the center host
    port: int = 1883  # broker TCP port
    username: str = ""  # defaults to the node id when a password is set
    password: str = ""  # empty: read from password_file, if it exists
    password_file: str = str(FLEET_DIR / "secrets" / "{node}.password")  # used if it exists; {node} = node id
    keepalive_s: int = 5  # MQTT keep-alive; the broker declares us dead after 1.5x this
    connect_timeout_s: float = 15.0  # first connection must succeed within this
    reconnect_min_s: float = 0.2  # first reconnect delay; doubles up to reconnect_max_s
    reconnect_max_s: float = 5.0
    session_expiry_s: int = 300  # broker keeps our subscriptions and QoS 1 backlog this long while away
    # Unacknowledged QoS 1 messages we may have out: 100 covers 100 x the loopback round trip. Plain paho
    # (batched_io = false) walks every outgoing message on each PUBACK, so a big window costs O(window)
    # per ack there; the batched client keeps its queue in order and pays O(1).
    max_inflight: int = 100
    receive_maximum: int = 1000  # unacknowledged QoS 1 messages the broker may have out to us
    # Batched reads, acks and writes (broker/batching_paho.py), which replace part of paho 2.2's
    # internals; false falls back to plain paho (e.g. to rule the batching out when debugging).
    batched_io: bool = True
    # CPython hands the GIL to a waiting thread only every 5 ms by default: next to Python-heavy model
    # code, paho's network thread then waits ~5 ms per packet (measured: QoS 1 p50 54 ms -> 4 ms at
    # 0.5 ms). Connecting sets the process's switch interval to at most this; 0 leaves it alone.
    gil_switch_interval_s: float = 0.0005
    # Emulated link to the broker (emulation/link_profiles.py): lan = direct; wan, cellular = through an
    # in-process proxy adding their delay and rate (docs/emulation.md).
    link_profile: str = "lan"
    # TLS to the broker's TLS listener (docs/security.md): the fleet CA file turns it on; {node} = node id.
    tls_ca_file: str = ""  # the fleet CA certificate (ca.crt); empty = plain TCP
    tls_cert_file: str = ""  # this node's client certificate, when the broker requires one
    tls_key_file: str = ""  # its private key

    def __post_init__(self) -> None:
        check(bool(self.host), "bus.host", "must not be empty")
        check(0 < self.port < 65536, "bus.port", f"{self.port} is not a TCP port")
        check(2 <= self.keepalive_s <= 3600, "bus.keepalive_s", "must be between 2 and 3600")
        check(self.connect_timeout_s > 0, "bus.connect_timeout_s", "must be > 0")
        check(0 < self.reconnect_min_s <= self.reconnect_max_s, "bus.reconnect_min_s", "must be > 0 and <= reconnect_max_s")
        check(1 <= self.max_inflight <= 65535, "bus.max_inflight", "must be 1-65535")
        check(1 <= self.receive_maximum <= 65535, "bus.receive_maximum", "must be 1-65535")
        check(0 <= self.gil_switch_interval_s <= 0.1, "bus.gil_switch_interval_s", "must be between 0 and 0.1")
        get_profile(self.link_profile, key="bus.link_profile")  # raises ConfigError listing the known ones

    def for_node(self, node_id: str) -> BusConfig:
        """This config with the node's credentials filled in (username = node id, password from file)."""
        password = self.password
        node_files = {name: getattr(self, name).replace("{node}", node_id) for name in ("tls_cert_file", "tls_key_file")}
        if any(node_files[name] != getattr(self, name) for name in node_files):
            return dataclasses.replace(self, **node_files).for_node(node_id)
        if not password and self.password_file:
            path = Path(self.password_file.replace("{node}", node_id))
            if path.exists():
                password = path.read_text().strip()
            else:
                logger.warning("bus.password_file %s does not exist: connecting without a password", path)
        if not password:
            return self
        return dataclasses.replace(self, username=self.username or node_id, password=password)
