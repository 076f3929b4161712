# Two commands do all set-up on a fresh Debian machine (as root): `make run` and `make test`.
SHELL := /bin/bash
PY := .venv/bin/python
FLEET_DIR := .fleet
# systemd: systemd-analyze verifies the edge installer's unit (tests/integration/test_install_edge.py)
APT_PACKAGES := mosquitto mosquitto-clients influxdb victoria-metrics chromium chromium-driver gcc libc6-dev systemd
STAMP_APT := $(FLEET_DIR)/.apt-installed
STAMP_VENV := .venv/.installed
# OpenMP workers that spin while they wait slow inference 10x when processes share the cores.
export OMP_WAIT_POLICY := PASSIVE

.PHONY: run test setup model-store lint clean-fleet

setup: $(STAMP_APT) $(STAMP_VENV) model-store

$(STAMP_APT):
	@mkdir -p $(FLEET_DIR)
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	python3 -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@# The Debian packages start system services we do not use: the fleet runs its own on loopback.
	@-systemctl disable --now mosquitto influxdb victoria-metrics >/dev/null 2>&1 || true
	@touch $@

$(STAMP_VENV): requirements.txt pyproject.toml
	@test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

# Idempotent: verifies the store and only does work when something is missing.
model-store: $(STAMP_VENV)
	$(PY) -m models prepare

# Extra flags for the fleet, e.g. make run ARGS="--set edge_link=wan --set edge_cpu_quota=0.25"
run: setup
	$(PY) -m local_fleet $(ARGS)

lint: $(STAMP_VENV)
	$(PY) -m ruff check .

test: setup
	$(PY) -m ruff check .
	$(PY) -m pytest

clean-fleet:
	rm -rf $(FLEET_DIR)
