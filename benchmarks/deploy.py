"""Deployment benchmark: a real model from the center's artifact server to an edge store over loopback HTTP.

`.venv/bin/python -m benchmarks.deploy --json` prints one JSON object as its last line:
mb_per_s (whole model, command to installed, median of --runs; MB = 10^6 bytes), file_bytes,
resume_ok (the model file's transfer is cut halfway; the retry must ask for the rest with a Range
request, the server must send only the rest, and the installed file must verify), resume_served_ratio
(bytes the server sent for that file / its size; 1.0 = nothing re-sent), tamper_rejected (a file
changed on the center after the index was built: the deploy fails naming that file, nothing new is
installed and the previous copy still verifies).

The model is the prepared store's smollm2-135m-int8 (or smollm2-135m); without a prepared store, a
large tiny model is written to a temporary store instead.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.link_faults import CutTransport
from benchmarks.report import print_result
from edge_node.deployer import DeployConfig, ModelDeployer
from edge_node.model_install import STAGING_DIR
from fleet_center.artifacts import ArtifactServer
from models.manifest import MANIFEST_NAME
from models.paths import default_store_root

NODE = "pi-01"
PREFERRED_MODELS = ("smollm2-135m-int8", "smollm2-135m")
FAST_RETRY = DeployConfig(backoff_initial_s=0.05, progress_interval_s=1.0)


def pick_model(store: Path, scratch: Path) -> tuple[Path, str]:
    """A prepared real model, else a tiny model with a large embedding written into `scratch`."""
    for model_id in PREFERRED_MODELS:
        if (store / model_id / MANIFEST_NAME).is_file():
            return store, model_id
    from models.tiny import write_tiny_model

    write_tiny_model(scratch, "tiny-large", hidden=512, layers=4)  # about 150 MB of fp32
    return scratch, "tiny-large"


def largest_file(store: Path, model_id: str) -> tuple[str, int]:
    files = [p for p in (store / model_id).iterdir() if p.is_file() and p.name != MANIFEST_NAME]
    biggest = max(files, key=lambda p: p.stat().st_size)
    return biggest.name, biggest.stat().st_size


def measure_throughput(server: ArtifactServer, model_id: str, scratch: Path, runs: int) -> tuple[float, int]:
    """Median MB/s of whole-model deploys into a fresh edge store each run, and the model's bytes."""
    rates: list[float] = []
    total_bytes = 0
    for run in range(runs):
        edge = scratch / f"edge-throughput-{run}"
        deployer = ModelDeployer(NODE, edge, lambda status: None, FAST_RETRY)
        started = time.perf_counter()
        outcome = deployer.deploy(server.deploy_command(model_id), 600)
        seconds = time.perf_counter() - started
        deployer.close()
        if outcome.state != "ready":
            raise SystemExit(f"deploy failed: {outcome.reason}")
        total_bytes = outcome.bytes_downloaded
        rates.append(total_bytes / seconds / 1e6)
        shutil.rmtree(edge)
    return statistics.median(rates), total_bytes


def measure_resume(server: ArtifactServer, model_id: str, scratch: Path) -> dict[str, object]:
    """Cut the biggest file halfway; prove from the server's log that the retry sent only the rest."""
    file_name, size = largest_file(server.store_root, model_id)
    cut_at = size // 2
    transport = CutTransport({file_name: cut_at})
    edge = scratch / "edge-resume"
    deployer = ModelDeployer(NODE, edge, lambda status: None, FAST_RETRY,
                             client_factory=lambda: httpx.Client(transport=transport, timeout=30))
    already = len(server.served())
    outcome = deployer.deploy(server.deploy_command(model_id), 600)
    deployer.close()
    served = [s for s in server.served()[already:] if s.file_name == file_name]
    resumed = len(served) == 2 and served[1].status == 206 and served[1].start == cut_at
    sent = sum(s.bytes_sent for s in served)
    ok = outcome.state == "ready" and resumed and served[1].bytes_sent == size - cut_at
    shutil.rmtree(edge, ignore_errors=True)
    return {"resume_ok": ok, "resume_from_bytes": served[1].start if resumed else -1,
            "resume_served_ratio": round(sent / size, 3), "resume_requests": [(s.status, s.start) for s in served]}


def measure_tamper(scratch: Path) -> dict[str, object]:
    """Install version 1, publish version 2, change a file of it on the center, deploy: must fail cleanly."""
    from models.store import ModelStore
    from models.tiny import write_tiny_model

    center, edge = scratch / "tamper-center", scratch / "tamper-edge"
    statuses: list[object] = []
    deployer = ModelDeployer(NODE, edge, statuses.append, FAST_RETRY)
    with ArtifactServer(center) as server:
        write_tiny_model(center, "tiny-t", seed=1)
        first = deployer.deploy(server.deploy_command("tiny-t"), 60)
        old_version = ModelStore(edge).verify("tiny-t").source
        write_tiny_model(center, "tiny-t", seed=2)
        command = server.deploy_command("tiny-t")  # the index is built now ...
        weights = center / "tiny-t" / "model.safetensors"
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0x01  # ... and one bit of one file changes afterwards
        weights.write_bytes(bytes(data))
        outcome = deployer.deploy(command, 60)
    deployer.close()
    still_old = ModelStore(edge).verify("tiny-t").source == old_version  # raises if the old copy was damaged
    nothing_staged = not list((edge / STAGING_DIR).rglob("model.safetensors"))
    rejected = (first.state == "ready" and outcome.state == "failed" and "model.safetensors" in outcome.reason
                and still_old and nothing_staged)
    return {"tamper_rejected": rejected, "tamper_reason": outcome.reason}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.deploy", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print only the JSON result line")
    parser.add_argument("--store", type=Path, default=default_store_root(), help="the center's model store")
    parser.add_argument("--runs", type=int, default=3, help="whole-model deploys timed for mb_per_s")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="deploy-bench-") as tmp:
        scratch = Path(tmp)
        store, model_id = pick_model(args.store, scratch / "fallback-store")
        with ArtifactServer(store) as server:
            mb_per_s, total_bytes = measure_throughput(server, model_id, scratch, args.runs)
            resume = measure_resume(server, model_id, scratch)
        tamper = measure_tamper(scratch)
    result = {"model_id": model_id, "model_bytes": total_bytes, "mb_per_s": round(mb_per_s, 1), **resume, **tamper}
    print_result(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
