"""The center's artifact server: index, Range requests, ETag, 404s and refused paths (fake models, loopback only)."""

import hashlib
import json
import socket

import httpx
import pytest

from fleet_center.artifacts import (
    ArtifactServer,
    RangeNotSatisfiable,
    RefusedPath,
    build_deploy_command,
    build_index,
    parse_range,
    parse_route,
)
from models.manifest import MANIFEST_NAME
from tests.conftest import wait_until
from tests.unit.manifest_dirs import make_model

WEIGHTS = bytes(range(256)) * 4096  # 1 MiB with a recognisable pattern


@pytest.fixture
def server(tmp_path):
    make_model(tmp_path, "m1", {"model.safetensors": WEIGHTS, "config.json": b'{"a": 1}'})
    (tmp_path / "m1" / "secret.txt").write_text("not in the manifest")
    with ArtifactServer(tmp_path) as running:
        yield running


def raw_get(port: int, path: str) -> int:
    """Status code of a GET sent byte for byte (httpx would normalise '..' away)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return int(sock.recv(1024).split(b" ")[1])


def test_index_lists_every_file_with_size_sha256_and_url(server, tmp_path):
    response = httpx.get(f"{server.base_url}/models/m1/index.json")
    assert response.status_code == 200
    body = response.json()
    names = [entry["name"] for entry in body["files"]]
    assert names == ["config.json", MANIFEST_NAME, "model.safetensors"]
    weights = next(entry for entry in body["files"] if entry["name"] == "model.safetensors")
    assert weights == {"name": "model.safetensors", "bytes": len(WEIGHTS),
                       "sha256": hashlib.sha256(WEIGHTS).hexdigest(), "url": "files/model.safetensors"}
    assert body["bytes"] == sum(entry["bytes"] for entry in body["files"])


def test_deploy_command_pins_the_served_index(server, tmp_path):
    command = server.deploy_command("m1", command_id="c1", pin=True)
    served = httpx.get(command.url).content
    assert command.kind == "deploy_model" and command.model_id == "m1" and command.pin
    assert command.sha256 == hashlib.sha256(served).hexdigest()
    assert command.model_version == build_index(tmp_path, "m1").model_version


def test_model_version_changes_when_a_file_changes(tmp_path):
    make_model(tmp_path / "a", "m", {"w": b"one"})
    make_model(tmp_path / "b", "m", {"w": b"two"})
    assert build_index(tmp_path / "a", "m").model_version != build_index(tmp_path / "b", "m").model_version


def test_whole_file_has_sha256_etag_and_accepts_ranges(server):
    response = httpx.get(f"{server.base_url}/models/m1/files/model.safetensors")
    assert response.status_code == 200
    assert response.content == WEIGHTS
    assert response.headers["ETag"] == f'"{hashlib.sha256(WEIGHTS).hexdigest()}"'
    assert response.headers["Accept-Ranges"] == "bytes"


def test_range_request_returns_206_with_content_range(server):
    url = f"{server.base_url}/models/m1/files/model.safetensors"
    response = httpx.get(url, headers={"Range": "bytes=1000-"})
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes 1000-{len(WEIGHTS) - 1}/{len(WEIGHTS)}"
    assert response.content == WEIGHTS[1000:]
    # The server logs a range after its last byte is written: the client can finish reading first.
    assert wait_until(lambda: server.served(), timeout_s=5)
    assert server.served()[-1].start == 1000 and server.served()[-1].bytes_sent == len(WEIGHTS) - 1000


def test_stale_if_range_gets_the_whole_file(server):
    url = f"{server.base_url}/models/m1/files/model.safetensors"
    response = httpx.get(url, headers={"Range": "bytes=1000-", "If-Range": '"' + "0" * 64 + '"'})
    assert response.status_code == 200 and response.content == WEIGHTS


def test_range_past_the_end_is_416(server):
    url = f"{server.base_url}/models/m1/files/config.json"
    response = httpx.get(url, headers={"Range": "bytes=500-"})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == "bytes */8"


def test_head_sends_headers_only(server):
    response = httpx.head(f"{server.base_url}/models/m1/files/model.safetensors")
    assert response.status_code == 200 and response.headers["Content-Length"] == str(len(WEIGHTS))
    assert response.content == b""


def test_unknown_model_is_404(server):
    assert httpx.get(f"{server.base_url}/models/nope/index.json").status_code == 404
    assert httpx.get(f"{server.base_url}/models/nope/files/config.json").status_code == 404


def test_file_not_in_the_manifest_is_404_even_if_on_disk(server):
    assert httpx.get(f"{server.base_url}/models/m1/files/secret.txt").status_code == 404


@pytest.mark.parametrize("path", [
    "/models/../../etc/passwd",
    "/models/m1/files/../../../etc/passwd",
    "/models/m1/files/..%2F..%2Fetc%2Fpasswd",
    "/models/%2e%2e/files/passwd",
    "/models/m1/files/.hidden",
])
def test_path_traversal_is_refused(server, path):
    assert raw_get(server.port, path) == 400


def test_symlink_out_of_the_store_is_refused(tmp_path):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"secret")
    store = tmp_path / "store"
    directory = make_model(store, "m1", {"w.bin": b"secret"})
    (directory / "w.bin").unlink()
    (directory / "w.bin").symlink_to(outside)
    with ArtifactServer(store) as server:
        assert httpx.get(f"{server.base_url}/models/m1/files/w.bin").status_code == 400


def test_unknown_route_is_404(server):
    assert httpx.get(f"{server.base_url}/other").status_code == 404
    assert json.loads(httpx.get(f"{server.base_url}/models/m1").content)["error"]


@pytest.mark.parametrize(("header", "expected"), [
    (None, None), ("bytes=0-", (0, 100)), ("bytes=10-19", (10, 20)), ("bytes=90-500", (90, 100)),
    ("bytes=-10", (90, 100)), ("bytes=-500", (0, 100)), ("bytes=0-1,5-6", None), ("items=0-1", None),
])
def test_parse_range(header, expected):
    assert parse_range(header, 100) == expected


def test_parse_range_past_the_end_raises():
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=100-", 100)


def test_parse_route():
    assert parse_route("/models/m1/index.json") == ("m1", None)
    assert parse_route("/models/m1/files/a.bin?x=1") == ("m1", "a.bin")
    assert parse_route("/models/m1/other/a.bin") is None
    with pytest.raises(RefusedPath):
        parse_route("/models/m1/files/%2e%2e")


def test_build_deploy_command_for_unknown_model_raises(tmp_path):
    from models.errors import UnknownModelError

    with pytest.raises(UnknownModelError):
        build_deploy_command(tmp_path, "http://x", "nope")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_methods_other_than_get_and_head_are_405(server, method):
    response = httpx.request(method, f"{server.base_url}/models/m1/index.json")
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"


def test_index_carries_the_centers_signature(tmp_path):
    from fleet_center.artifacts import ArtifactServerConfig
    from security.signing import SIGNATURE_HEADER, load_public_key, verify

    make_model(tmp_path / "store", "m1", {"config.json": b"{}"})
    key = tmp_path / "keys" / "center_signing.key"
    with ArtifactServer(tmp_path / "store", ArtifactServerConfig(signing_key_file=str(key))) as running:
        response = httpx.get(f"{running.base_url}/models/m1/index.json")
    verify(load_public_key(key.with_suffix(".pub")), response.content, response.headers[SIGNATURE_HEADER])
