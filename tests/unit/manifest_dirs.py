"""A model directory with a real manifest (sizes and sha256) but no torch weights, for deployment tests."""

from pathlib import Path

from models.manifest import MANIFEST_NAME, Manifest, describe_files


def make_model(root: Path, model_id: str, files: dict[str, bytes]) -> Path:
    """Write `files` under root/model_id (adding to what is there) and a manifest describing them."""
    directory = root / model_id
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    described = describe_files(directory)
    manifest = Manifest(id=model_id, architecture="LlamaForCausalLM", layers=1, hidden_size=8, vocab_size=16,
                        parameters=1, bytes=sum(e.bytes for e in described.values()), dtype="float32",
                        variant="tiny", source="test", files=described)
    (directory / MANIFEST_NAME).write_text(manifest.to_json())
    return directory
