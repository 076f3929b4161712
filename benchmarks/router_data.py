"""The hard-example miner's training table, and the miner trained from it.

    .venv/bin/python -m benchmarks.router_data collect --edge-model smollm2-135m-edge15
    .venv/bin/python -m benchmarks.router_data train --edge-model smollm2-135m-edge15

`collect` runs every task of the router-training part (routing/splits.py) in this process, exactly as
the fleet would: the edge model with its calibrated exits (the edge's standalone path), the cloud
model without exits (the cloud worker's path), both greedy through `models.runner.run_task`, plus the
edge model's early-layer statistics of the query (`models.prompt_features`). One JSON line per task
goes to routing/data/train-<edge model>.jsonl as it finishes (a restart skips the tasks already there).
Each row also carries the signals inference-then-mining reads from the edge's answer (its mean token
probability under the edge model, repeated 3-grams, whether it parses); `signals` adds them to rows
collected before they were recorded (the edge alone again, greedy, so the same answers).
`train` fits the miner on that table and writes routing/data/miner-<edge model>.json, which edges load
for `"route": "auto"`, and the escalation thresholds to routing/data/escalation-<edge model>.json. The
held-out part is never read here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.report import print_result
from fleet_center.evaluation import prediction_from_answer, score_task
from fleet_center.round_plan import task_type_name
from fleet_center.workload import Task, load_tasks
from routing.escalation import AnswerSignals, escalation_file, fit_escalation
from routing.features import QueryFeatures
from routing.miner import miner_file
from routing.operating_point import versus_random
from routing.splits import split_tasks
from routing.training import TrainingConfig, train_miner

if TYPE_CHECKING:  # the models stack loads only where a command needs it
    from models.loaded import LoadedModel
    from models.runner import TaskOutcome

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent.parent / "routing" / "data"
CLOUD_MODEL = "smollm2-135m"
MAX_NEW_TOKENS = 48  # the center's default per task; the job uses the same


def table_path(edge_model: str) -> Path:
    return DATA_DIR / f"train-{edge_model}.jsonl"


def escalation_path(edge_model: str) -> Path:
    return escalation_file(DATA_DIR, edge_model)


def miner_path(edge_model: str) -> Path:
    return miner_file(DATA_DIR, edge_model)


def training_tasks(tasks: tuple[Task, ...]) -> list[Task]:
    """The router-training part, types interleaved (TC, NER, QA, TS, SG, TC, ...): a table cut short stays balanced."""
    split = split_tasks([(t.task_id, t.task_type) for t in tasks])
    wanted = set(split.train)
    by_type: dict[int, list[Task]] = {}
    for task in tasks:
        if task.task_id in wanted:
            by_type.setdefault(task.task_type, []).append(task)
    queues = [by_type[t] for t in sorted(by_type)]
    return [queue[i] for i in range(max(map(len, queues))) for queue in queues if i < len(queue)]


def collect(edge_model: str, max_new_tokens: int, limit: int) -> dict:
    from models.paths import default_store_root
    from models.prompt_features import prompt_statistics
    from models.runner import run_task
    from models.store import ModelStore

    store = ModelStore(default_store_root())
    edge, cloud = store.load(edge_model), store.load(CLOUD_MODEL)
    path = table_path(edge_model)
    done = {json.loads(line)["task_id"] for line in path.read_text().splitlines()} if path.exists() else set()
    todo = [task for task in training_tasks(load_tasks()) if task.task_id not in done][: limit or None]
    started = time.monotonic()
    with open(path, "a") as table:
        for index, task in enumerate(todo):
            name = task_type_name(task.task_type)
            statistics = prompt_statistics(edge, task.task_token)
            features = QueryFeatures(task.task_type, statistics.scalars(), statistics.pooled_hidden)
            row: dict[str, object] = {"task_id": task.task_id, "task_type": task.task_type,
                                      "features": features.to_json()}
            for side, model, policy in (("edge", edge, edge.exit_policy), ("cloud", cloud, None)):
                outcome = run_task(model, name, task.task_token, max_new_tokens, policy)
                prediction = prediction_from_answer(task.task_type, outcome.parsed, outcome.answer)
                row[f"{side}_answer"] = outcome.answer
                row[f"{side}_score"] = score_task(task, prediction).quality
                row[f"{side}_tokens"] = len(outcome.generation.tokens)
                if side == "edge":
                    row["edge_signals"] = edge_signals(model, task, outcome)
            table.write(json.dumps(row) + "\n")
            table.flush()
            logger.info("%d/%d task %d: edge %.2f cloud %.2f (%.0f s)", index + 1, len(todo), task.task_id,
                        row["edge_score"], row["cloud_score"], time.monotonic() - started)
    return {"table": str(path), "collected": len(todo), "rows": len(done) + len(todo)}


def edge_signals(model: LoadedModel, task: Task, outcome: TaskOutcome) -> dict:
    """What inference-then-mining sees of the edge's answer, as the edge computes it."""
    from edge_node.query_routing import edge_answer_signals

    signals = edge_answer_signals(model, task_type_name(task.task_type), task.task_token, outcome)
    return {"mean_confidence": signals.mean_confidence, "repetition": signals.repetition, "parse_ok": signals.parse_ok}


def add_signals(edge_model: str, max_new_tokens: int) -> dict:
    """Add `edge_signals` to the rows collected without them (the edge answers again; greedy, so the same answer)."""
    from models.paths import default_store_root
    from models.runner import run_task
    from models.store import ModelStore

    path = table_path(edge_model)
    rows = read_table(path)
    tasks = {task.task_id: task for task in load_tasks()}
    edge = ModelStore(default_store_root()).load(edge_model)
    added = 0
    for row in rows:
        if "edge_signals" in row:
            continue
        task = tasks[row["task_id"]]
        outcome = run_task(edge, task_type_name(task.task_type), task.task_token, max_new_tokens, edge.exit_policy)
        if outcome.answer != row["edge_answer"]:
            raise RuntimeError(f"task {task.task_id}: the edge answers differently than when collected; collect again")
        row["edge_signals"] = edge_signals(edge, task, outcome)
        added += 1
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return {"table": str(path), "signals_added": added, "rows": len(rows)}


def read_table(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train(edge_model: str, config: TrainingConfig) -> dict:
    rows = read_table(table_path(edge_model))
    features = [QueryFeatures.from_json(row["features"]) for row in rows]
    edge_scores = [row["edge_score"] for row in rows]
    cloud_scores = [row["cloud_score"] for row in rows]
    trained = train_miner(features, edge_scores, cloud_scores, config, edge_model=edge_model, cloud_model=CLOUD_MODEL)
    trained.model.save(miner_path(edge_model))
    point = trained.operating_point
    # The miner's own test before any held-out run: its out-of-fold routes against random at the same share.
    # Optimistic (the threshold was chosen on these probabilities): a miner not ahead here will not be held out.
    versus = versus_random(trained.out_of_fold >= point.threshold, edge_scores, cloud_scores)
    escalation = train_escalation(edge_model, rows)
    oracle = sum(map(max, edge_scores, cloud_scores)) / len(rows)
    return {"miner": str(miner_path(edge_model)), "trained_on": len(rows), "hard_share": round(trained.hard_share, 3),
            "pca_components": trained.config.pca_components, "regularisation_c": trained.config.regularisation_c,
            "edge_quality": round(sum(edge_scores) / len(rows), 4),
            "cloud_quality": round(sum(cloud_scores) / len(rows), 4), "oracle_quality": round(oracle, 4),
            "operating_point": {"threshold": round(point.threshold, 4), "cloud_query_ratio": round(point.cloud_query_ratio, 3),
                                "quality_ratio": round(point.quality_ratio, 4), "reached_target": point.reached_target},
            "out_of_fold_vs_random": {name: round(value, 4) for name, value in dataclasses.asdict(versus).items()},
            "escalation": escalation}


def train_escalation(edge_model: str, rows: list[dict]) -> dict:
    """Fit inference-then-mining's thresholds on the rows that carry the edge's answer signals; write them."""
    rows = [row for row in rows if "edge_signals" in row]
    if not rows:
        return {"fitted": False, "why": "no row has edge_signals: run `signals` first"}
    signals = [AnswerSignals(**row["edge_signals"]) for row in rows]
    fit = fit_escalation(signals, [row["edge_score"] for row in rows], [row["cloud_score"] for row in rows])
    path = escalation_path(edge_model)
    fit.rule.save(path, {"edge_model": edge_model, "cloud_model": CLOUD_MODEL, "answers": len(rows),
                         "escalated_share": round(fit.escalated_share, 4), "quality_ratio": round(fit.quality_ratio, 4)})
    return {"fitted": True, "file": str(path), "rule": dataclasses.asdict(fit.rule), "answers": len(rows),
            "escalated_share": round(fit.escalated_share, 3), "quality_ratio": round(fit.quality_ratio, 4),
            "reached_target": fit.reached_target}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("collect", "signals", "train"))
    parser.add_argument("--edge-model", default="smollm2-135m-edge15")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    parser.add_argument("--limit", type=int, default=0, help="collect at most this many new tasks (0 = all)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    if args.command == "collect":
        result = collect(args.edge_model, args.max_new_tokens, args.limit)
    elif args.command == "signals":
        result = add_signals(args.edge_model, args.max_new_tokens)
    else:
        result = train(args.edge_model, TrainingConfig(pca_grid=(0, 4, 8), regularisation_grid=(0.05, 0.2, 1.0)))
    print_result(result, args.json)


if __name__ == "__main__":
    main()
