"""Past one broker on Mosquitto's own bridging: site brokers (edges connect there) bridged to a core broker.

The center and the cloud workers connect to the core. Each site broker runs the usual per-node passwords
and ACLs for its own edges and keeps one outgoing MQTT 5 bridge to the core (so response topics,
correlation data and message expiry cross it): everything its edges publish goes out, and only what
they may read comes back in (the center's state, their commands, dispatches, replies and session
downlinks), so a site never carries another site's traffic. docs/scaling.md has the topology and limits.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from broker import topics

logger = logging.getLogger(__name__)


def bridge_lines(site_name: str, core_address: str, password: str, edge_users: tuple[str, ...],
                 keepalive_s: int = 5) -> list[str]:
    """The `connection` block of a site broker's config: its bridge to the core as user `site_name`."""
    lines = [
        f"connection {site_name}",
        f"address {core_address}",
        f"remote_clientid bridge-{site_name}",
        f"remote_username {site_name}",
        f"remote_password {password}",
        "bridge_protocol_version mqttv50",  # MQTT 5 properties (response topic, expiry) cross the bridge
        "try_private true",  # Mosquitto to Mosquitto: the core does not echo our own messages back
        "cleansession false",  # the core queues QoS 1 messages for the site while the bridge is down
        "restart_timeout 1 5",  # reconnect after 1 s, backing off to 5 s
        f"keepalive_interval {keepalive_s}",
        f"topic {topics.PREFIX}/# out 1",
        f"topic {topics.CENTER_STATE.topic()} in 1",
    ]
    for edge in edge_users:
        lines += [f"topic {topics.NODE_COMMAND.topic(node=edge)} in 1",
                  f"topic {topics.TASK_DISPATCH.topic(node=edge)} in 1",
                  f"topic {topics.REPLY.topic(client=edge)} in 1",
                  f"topic {topics.INFER_DOWN.filter(edge=edge)} in 1"]
    return lines


def bridge_acl_lines(bridge_users: tuple[str, ...]) -> list[str]:
    """Core broker ACL: a site's bridge speaks for all its edges, whose own site broker checked them."""
    lines: list[str] = []
    for user in bridge_users:
        lines += [f"user {user}", f"topic readwrite {topics.PREFIX}/#", ""]
    return lines


@dataclasses.dataclass(frozen=True)
class Topology:
    """A core broker and its sites, as BrokerConfig keyword sets (see `two_level`)."""

    core: dict[str, object]
    sites: dict[str, dict[str, object]]  # site name -> its broker's settings


def two_level(root: Path | str, core_port: int, site_ports: dict[str, int], edges_by_site: dict[str, tuple[str, ...]],
              cloud_users: tuple[str, ...], secrets_dir: str, keepalive_s: int = 5) -> Topology:
    """Settings of a core broker on `core_port` and one site broker per entry of `site_ports`, bridged to it."""
    root = Path(root)
    sites = {
        name: {"port": port, "state_dir": str(root / f"broker-{name}"), "secrets_dir": secrets_dir,
               "cloud_users": (), "edge_users": edges_by_site[name], "core_address": f"127.0.0.1:{core_port}",
               "site_name": name, "bridge_keepalive_s": keepalive_s}
        for name, port in site_ports.items()
    }
    core = {"port": core_port, "state_dir": str(root / "broker-core"), "secrets_dir": secrets_dir,
            "cloud_users": cloud_users, "edge_users": (), "bridge_users": tuple(site_ports)}
    return Topology(core, sites)
