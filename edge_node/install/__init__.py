"""Installing an edge on a Pi or any Debian: its own venv under /opt, /etc/edgefleet/edge.toml, a systemd unit.

Standard library only: it runs with the machine's python3 before any venv exists.
"""
