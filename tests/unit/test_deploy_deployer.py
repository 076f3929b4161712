"""Edge-side deployer against a real artifact server on loopback (fake models, no broker, no torch)."""

import hashlib
import threading

import httpx
import pytest

from benchmarks.link_faults import CutTransport
from edge_node.deploy_errors import DeployFailed
from edge_node.deployer import DeployConfig, ModelDeployer, parse_index
from edge_node.model_install import STAGING_DIR
from fleet_center.artifacts import ArtifactServer, ArtifactServerConfig, build_index
from models.manifest import MANIFEST_NAME
from security.signing import SIGNATURE_HEADER, Signer
from tests.unit.manifest_dirs import make_model

WEIGHTS = bytes(range(256)) * 8192  # 2 MiB
NODE = "pi-01"


@pytest.fixture
def center(tmp_path):
    make_model(tmp_path / "center", "m1", {"model.safetensors": WEIGHTS, "config.json": b'{"a": 1}'})
    config = ArtifactServerConfig(signing_key_file=str(tmp_path / "keys" / "center_signing.key"))
    with ArtifactServer(tmp_path / "center", config) as server:
        yield server


class StripSignature(httpx.HTTPTransport):
    """A proxy in the way that drops the center's index signature."""

    def handle_request(self, request):
        response = super().handle_request(request)
        del response.headers[SIGNATURE_HEADER]
        return response


@pytest.fixture
def edge_root(tmp_path):
    return tmp_path / "edge"


def make_deployer(edge_root, statuses, transport=None, sleeps=None, **config):
    public_key = str(edge_root.parent / "keys" / "center_signing.pub")  # what the center fixture wrote
    settings = DeployConfig(**{"backoff_initial_s": 0.01, "attempts": 3, "progress_interval_s": 0.0,
                               "center_public_key_file": public_key, **config})
    factory = (lambda: httpx.Client(transport=transport, timeout=5)) if transport else None
    return ModelDeployer(NODE, edge_root, statuses.append, settings, client_factory=factory,
                         sleep=(sleeps.append if sleeps is not None else lambda s: None))


def test_deploy_installs_every_file_and_reports_ready(center, edge_root):
    statuses = []
    outcome = make_deployer(edge_root, statuses).deploy(center.deploy_command("m1", command_id="c1"), 10)
    assert outcome.state == "ready", outcome.reason
    assert (edge_root / "m1" / "model.safetensors").read_bytes() == WEIGHTS
    assert (edge_root / "m1" / MANIFEST_NAME).read_bytes() == (center.store_root / "m1" / MANIFEST_NAME).read_bytes()
    assert sorted(p.name for p in (edge_root / "m1").iterdir()) == ["config.json", MANIFEST_NAME, "model.safetensors"]
    states = [s.state for s in statuses]
    assert states[0] == "downloading" and states[-2:] == ["verifying", "ready"]
    progress = [s.progress for s in statuses if s.state == "downloading"]
    assert progress == sorted(progress) and all(s.command_id == "c1" and s.node_id == NODE for s in statuses)


def test_interrupted_transfer_resumes_from_the_bytes_on_disk(center, edge_root):
    transport = CutTransport({"model.safetensors": 700_000})
    outcome = make_deployer(edge_root, [], transport).deploy(center.deploy_command("m1"), 10)
    assert outcome.state == "ready", outcome.reason
    served = [s for s in center.served() if s.file_name == "model.safetensors"]
    assert [(s.status, s.start) for s in served] == [(200, 0), (206, 700_000)]
    assert served[1].bytes_sent == len(WEIGHTS) - 700_000
    assert outcome.bytes_downloaded == len(WEIGHTS) + 8 + (center.store_root / "m1" / MANIFEST_NAME).stat().st_size
    assert (edge_root / "m1" / "model.safetensors").read_bytes() == WEIGHTS


def test_partial_file_from_an_earlier_failed_deploy_is_resumed(center, edge_root):
    transport = CutTransport({"model.safetensors": 500_000})
    first = make_deployer(edge_root, [], transport, attempts=1).deploy(center.deploy_command("m1"), 10)
    assert first.state == "failed" and "model.safetensors" in first.reason
    assert not (edge_root / "m1").exists()
    second = make_deployer(edge_root, []).deploy(center.deploy_command("m1"), 10)
    assert second.state == "ready", second.reason
    served = [(s.status, s.start) for s in center.served() if s.file_name == "model.safetensors"]
    assert served == [(200, 0), (206, 500_000)]


def test_tampered_file_is_rejected_and_never_installed(center, edge_root):
    command = center.deploy_command("m1")
    path = center.store_root / "m1" / "model.safetensors"
    path.write_bytes(b"X" + WEIGHTS[1:])  # same size, different bytes: only the hash can tell
    statuses = []
    outcome = make_deployer(edge_root, statuses).deploy(command, 10)
    assert outcome.state == "failed"
    assert "model.safetensors" in outcome.reason and "sha256" in outcome.reason
    assert statuses[-1].state == "failed" and statuses[-1].reason == outcome.reason
    assert not (edge_root / "m1").exists()
    assert not list((edge_root / STAGING_DIR / "m1").glob("model.safetensors*"))


def test_failed_deploy_leaves_the_previous_copy_untouched(center, edge_root):
    old = make_model(edge_root, "m1", {"model.safetensors": b"old weights", "config.json": b"{}"})
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    command = center.deploy_command("m1")
    (center.store_root / "m1" / "model.safetensors").write_bytes(b"X" + WEIGHTS[1:])
    assert make_deployer(edge_root, []).deploy(command, 10).state == "failed"
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before


def test_new_version_replaces_the_previous_copy(center, edge_root):
    make_model(edge_root, "m1", {"model.safetensors": b"old weights", "stale.bin": b"gone"})
    assert make_deployer(edge_root, []).deploy(center.deploy_command("m1"), 10).state == "ready"
    assert not (edge_root / "m1" / "stale.bin").exists()
    assert (edge_root / "m1" / "model.safetensors").read_bytes() == WEIGHTS
    assert not (edge_root / STAGING_DIR / "m1").exists()


def test_truncated_file_on_the_center_is_rejected(center, edge_root):
    command = center.deploy_command("m1")
    (center.store_root / "m1" / "model.safetensors").write_bytes(WEIGHTS[: len(WEIGHTS) // 2])
    outcome = make_deployer(edge_root, []).deploy(command, 10)
    assert outcome.state == "failed"
    assert "model.safetensors" in outcome.reason and "bytes" in outcome.reason
    assert not (edge_root / "m1").exists()


def test_unknown_model_fails_at_once_with_404(center, edge_root):
    command = center.deploy_command("m1")
    command = type(command)(command_id="c9", kind="deploy_model", model_id="m1", sha256=command.sha256,
                            url=command.url.replace("/m1/", "/nope/"))
    sleeps = []
    outcome = make_deployer(edge_root, [], sleeps=sleeps).deploy(command, 10)
    assert outcome.state == "failed" and "404" in outcome.reason
    assert sleeps == []  # a 404 is not retried


def test_index_that_does_not_match_the_command_is_rejected(center, edge_root):
    command = center.deploy_command("m1")
    make_model(center.store_root, "m1", {"config.json": b'{"a": 2}'})  # rewrites the manifest
    outcome = make_deployer(edge_root, []).deploy(command, 10)
    assert outcome.state == "failed" and "sha256" in outcome.reason and "index" in outcome.reason


def test_unreachable_center_is_retried_with_backoff_then_fails(center, edge_root):
    command = center.deploy_command("m1")
    center.stop()
    sleeps = []
    outcome = make_deployer(edge_root, [], sleeps=sleeps, attempts=4, backoff_initial_s=0.5,
                            backoff_max_s=1.5).deploy(command, 10)
    assert outcome.state == "failed" and "gave up after 4 attempts" in outcome.reason
    assert sleeps == [0.5, 1.0, 1.5]


def test_concurrent_deploys_of_one_model_are_coalesced(center, edge_root):
    statuses = []
    gate = threading.Event()

    class SlowTransport(CutTransport):
        def handle_request(self, request):
            gate.wait(5)
            return super().handle_request(request)

    transport = SlowTransport({})
    deployer = make_deployer(edge_root, statuses, transport)
    first = deployer.submit(center.deploy_command("m1", command_id="c1"))
    second = deployer.submit(center.deploy_command("m1", command_id="c2"))
    assert first is second
    gate.set()
    assert first.result(10).state == "ready"
    index_requests = [r for r in transport.requests if r.url.path.endswith("index.json")]
    assert len(index_requests) == 1
    assert {s.command_id for s in statuses if s.state == "ready"} == {"c1", "c2"}


def test_redeploy_of_the_installed_version_downloads_nothing(center, edge_root):
    deployer = make_deployer(edge_root, [])
    assert deployer.deploy(center.deploy_command("m1"), 10).state == "ready"
    again = deployer.deploy(center.deploy_command("m1"), 10)
    assert again.state == "ready" and again.bytes_downloaded == 0


def test_interrupted_install_is_rolled_back(center, edge_root):
    make_model(edge_root / STAGING_DIR, "m1.previous", {"model.safetensors": b"old"})
    # The crash happened between "rename old aside" and "rename new in": no m1 in the store.
    command = center.deploy_command("m1")
    command = type(command)(command_id="c", kind="deploy_model", model_id="m1", sha256=command.sha256,
                            url=command.url.replace("/m1/", "/nope/"))
    assert make_deployer(edge_root, []).deploy(command, 10).state == "failed"
    assert (edge_root / "m1" / "model.safetensors").read_bytes() == b"old"


def test_parse_index_rejects_names_that_leave_the_staging_directory(tmp_path):
    make_model(tmp_path, "m1", {"w": b"x"})
    raw = build_index(tmp_path, "m1").to_bytes().replace(b'"name":"w"', b'"name":"../w"')
    with pytest.raises(DeployFailed):
        parse_index(raw, "http://c/models/m1/index.json", "m1")


def test_parse_index_resolves_urls_against_the_index(tmp_path):
    make_model(tmp_path, "m1", {"w": b"x"})
    index = parse_index(build_index(tmp_path, "m1").to_bytes(), "http://c:1/models/m1/index.json", "m1")
    assert {f.name: f.url for f in index.files}["w"] == "http://c:1/models/m1/files/w"
    assert {f.name: f.sha256 for f in index.files}["w"] == hashlib.sha256(b"x").hexdigest()


def test_hash_mismatch_after_a_resume_downloads_the_file_once_more_from_zero(center, edge_root):
    command = center.deploy_command("m1")
    (center.store_root / "m1" / "model.safetensors").write_bytes(b"X" + WEIGHTS[1:])
    transport = CutTransport({"model.safetensors": 300_000})
    outcome = make_deployer(edge_root, [], transport).deploy(command, 10)
    assert outcome.state == "failed" and "model.safetensors" in outcome.reason
    served = [(s.status, s.start) for s in center.served() if s.file_name == "model.safetensors"]
    assert served == [(200, 0), (206, 300_000), (200, 0)]


def test_silent_server_times_out_and_fails(edge_root):
    import socket

    from broker.messages import NodeCommand

    with socket.socket() as listener:  # accepts connections (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/models/m1/index.json"
        command = NodeCommand(command_id="c", kind="deploy_model", model_id="m1", sha256="0" * 64, url=url)
        deployer = make_deployer(edge_root, [], attempts=2, read_timeout_s=0.2)
        outcome = deployer.deploy(command, 10)
    assert outcome.state == "failed" and "Timeout" in outcome.reason and "2 attempts" in outcome.reason


def test_unsigned_index_is_refused_and_the_installed_copy_stays(center, edge_root):
    old = make_model(edge_root, "m1", {"model.safetensors": b"old weights"})
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    outcome = make_deployer(edge_root, [], StripSignature()).deploy(center.deploy_command("m1"), 10)
    assert outcome.state == "failed" and "unsigned" in outcome.reason
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before


def test_index_signed_by_another_key_is_refused(center, edge_root, tmp_path):
    Signer.load_or_create(tmp_path / "impostor" / "center_signing.key")
    deployer = make_deployer(edge_root, [], center_public_key_file=str(tmp_path / "impostor" / "center_signing.pub"))
    outcome = deployer.deploy(center.deploy_command("m1"), 10)
    assert outcome.state == "failed" and "bad signature" in outcome.reason
    assert not (edge_root / "m1").exists()


def test_edge_without_the_center_public_key_installs_nothing(center, edge_root, tmp_path):
    deployer = make_deployer(edge_root, [], center_public_key_file=str(tmp_path / "nowhere.pub"))
    outcome = deployer.deploy(center.deploy_command("m1"), 10)
    assert outcome.state == "failed" and "no center public key" in outcome.reason
    assert not (edge_root / "m1").exists()
