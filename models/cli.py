"""Command line for the model store: prepare, list, train-exits, profile."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from models.catalog import CATALOG, prepare
from models.errors import ModelStoreError
from models.paths import EXIT_HEADS_DIR, REPO_ROOT, default_store_root
from models.store import ModelStore

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__)
    parser.add_argument("--store", type=Path, default=None, help="model store root (default: $EDGEFLEET_MODEL_STORE or .fleet/models)")
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare", help="build missing catalog variants; verify present ones")
    prep.add_argument("--repair", action="store_true", help="rebuild variants whose files are damaged")
    prep.add_argument("--base-only", action="store_true", help="only the fp32 base model")
    commands.add_parser("list", help="show the catalog and what the store holds")
    train = commands.add_parser("train-exits", help="train exit heads by self-distillation and calibrate the policy")
    train.add_argument("--out", type=Path, default=EXIT_HEADS_DIR, help="where to write heads, policy and report")
    train.add_argument("--epochs", type=int, default=None, help="override training epochs")
    train.add_argument("--recalibrate", action="store_true",
                       help="no training: fit the policy again for the heads already in --out")
    train.add_argument("--add-draft-heads", type=int, nargs="+", default=None, metavar="LAYER",
                       help="train only heads at these layers and add them to --out with their own rules "
                            "(speculative drafting at a deeper split; the exits' heads and rules stay)")
    prof = commands.add_parser("profile", help="measure every variant; write JSON + three PNG plots")
    prof.add_argument("--out", type=Path, default=REPO_ROOT / ".fleet" / "profiles", help="output directory")
    prof.add_argument("--models", nargs="*", default=None, help="model ids (default: whole catalog)")
    return parser


def cmd_list(store: ModelStore) -> None:
    held = set(store.list())
    for entry in CATALOG:
        if entry.model_id in held:
            m = store.manifest(entry.model_id)
            state = f"{m.bytes / 1e6:8.1f} MB  layers={m.layers:2d}  exits={list(m.exit_layers)}"
        else:
            state = "  (not prepared)"
        print(f"{entry.model_id:24s} {state}  {entry.description}")
    for model_id in sorted(held - {entry.model_id for entry in CATALOG}):
        print(f"{model_id:24s} (outside the catalog)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    store = ModelStore(args.store or default_store_root())
    started = time.perf_counter()
    try:
        if args.command == "prepare":
            manifests = prepare(store, repair=args.repair, only_base=args.base_only)
            print(f"model store {store.root}: {', '.join(m.id for m in manifests)} ready "
                  f"({time.perf_counter() - started:.1f} s)")
        elif args.command == "list":
            cmd_list(store)
        elif args.command == "train-exits":
            from models.exits.training import TrainingConfig, recalibrate, train_exits

            config = TrainingConfig() if args.epochs is None else TrainingConfig(epochs=args.epochs)
            if args.add_draft_heads:
                from models.exits.training import add_draft_heads

                report = add_draft_heads(store, args.out, tuple(args.add_draft_heads), config)
                print(json.dumps(report["head_agreement_held_out"]))
            else:
                report = recalibrate(store, args.out, config) if args.recalibrate else train_exits(store, args.out, config)
                print(json.dumps(report["summary"]))
        elif args.command == "profile":
            from models.profile import profile_catalog

            results = profile_catalog(store, args.out, args.models)
            print(json.dumps(results))
    except ModelStoreError as error:
        logger.error("%s", error)
        return 1
    return 0
