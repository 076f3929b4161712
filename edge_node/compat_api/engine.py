"""Runs one API generation on the edge: the model from the cache, the prompt through the chat template, tokens
through the decoding core in the requested collaboration mode, text out as it is decided.

The engine is what both familiar APIs share; it knows nothing of HTTP. It reports text deltas
through `on_text` (called on the generating thread) and returns a `GenerationOutcome` with the
timings Ollama's final object and OpenAI's usage need.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from edge_node.collab.agreement_budget import BudgetBook
from edge_node.collab.config import MODES
from edge_node.collab.generation import generate as collab_generate
from edge_node.compat_api.requests import ApiRequestError, GenerationOutcome, GenerationRequest
from edge_node.compat_api.text_stream import TextStream
from edge_node.executor import _fit as fit_collab_config
from edge_node.model_cache import CacheFullError, ModelCache, ModelLoadError, UnknownModelError
from models.decode_loop import DecodedToken, LocalStepper, decode
from models.decoding import LayerStack
from models.generation import pick_token

if TYPE_CHECKING:
    from edge_node.collab.config import CollabConfig
    from edge_node.collab.link import CollabClient
    from models.loaded import LoadedModel
    from models.store import ModelStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Limits of API generation on one edge; every field has a default."""

    default_mode: str = "standalone"  # collaboration mode of requests that name none
    max_new_tokens: int = 512  # most tokens one answer may ask for (Ollama's num_predict, OpenAI's max_tokens)
    parallel: int = 1  # API answers generated at once, each on a long-lived thread (others wait their turn)
    max_waiting: int = 64  # answers waiting for a turn before new ones are refused (HTTP 503)
    early_exit: bool = True  # greedy standalone answers leave at a confident exit head (the model's policy)


class _Halt(Exception):
    """Raised from the token callback to end a standalone answer early (stop string, client gone)."""


class GenerationEngine:
    """Generates API answers with the node's cache, store and cloud link."""

    def __init__(self, cache: ModelCache[LoadedModel], store: ModelStore,
                 collab: Callable[[], tuple[CollabClient | None, CollabConfig]], config: EngineConfig,
                 budgets: BudgetBook | None = None) -> None:
        self.cache, self.store, self.collab, self.config = cache, store, collab, config
        self.budgets = budgets or BudgetBook()  # the edge's collaborative agreement budgets (shared with tasks)
        self.modes: tuple[str, ...] = tuple(MODES)
        # Long-lived generation threads: torch's OpenMP team belongs to the thread that runs it, and a new
        # thread per answer (a new team each time, the last one still spinning) cost 10-30 % of the rate.
        self._pool = ThreadPoolExecutor(config.parallel, thread_name_prefix="api-generate")
        self._pending = 0  # answers submitted and not finished
        self._lock = threading.Lock()

    def check_model(self, model_id: str) -> None:
        """Raises ApiRequestError (404) unless the node's store has `model_id`."""
        if not self.store.has(model_id):
            raise ApiRequestError(f"model '{model_id}' not found on this edge (have: {', '.join(self.store.list())})",
                                  status=404, param="model", code="model_not_found")

    def submit(self, request: GenerationRequest, on_text: Callable[[str], None] = lambda _: None,
               on_start: Callable[[], None] = lambda: None,
               cancelled: Callable[[], bool] = lambda: False) -> Future[GenerationOutcome]:
        """Queue one answer for a generation thread; the future holds `generate`'s outcome or error.
        Raises ApiRequestError (404 unknown model, 503 when `max_waiting` answers already wait)."""
        self.check_model(request.model_id)
        with self._lock:
            if self._pending >= self.config.parallel + self.config.max_waiting:
                raise ApiRequestError(f"{self._pending} answers are already queued; try again later", status=503,
                                      code="busy")
            self._pending += 1
        future = self._pool.submit(self.generate, request, on_text, on_start, cancelled)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _: Future[GenerationOutcome]) -> None:
        with self._lock:
            self._pending -= 1

    def generate(self, request: GenerationRequest, on_text: Callable[[str], None] = lambda _: None,
                 on_start: Callable[[], None] = lambda: None,
                 cancelled: Callable[[], bool] = lambda: False) -> GenerationOutcome:
        """Generate one answer on the calling thread (`submit` runs it on a generation thread). `on_start` runs
        once the model is loaded and the prompt accepted, before any text. Raises ApiRequestError (400 prompt
        too long, 404 unknown model, 503 no room in the cache, 500 load failed)."""
        started = time.perf_counter()
        self.check_model(request.model_id)
        try:
            with self.cache.use(request.model_id, keep_alive_s=request.keep_alive_s) as model:
                load_s = time.perf_counter() - started
                prompt_ids = self._prompt_ids(model, request)
                on_start()
                return self._run(model, request, prompt_ids, started, load_s, on_text, cancelled)
        except UnknownModelError as error:
            raise ApiRequestError(str(error), status=404, param="model", code="model_not_found") from None
        except CacheFullError as error:
            raise ApiRequestError(str(error), status=503, code="no_room") from None
        except ModelLoadError as error:
            raise ApiRequestError(str(error), status=500, code="model_load_failed") from None

    def _prompt_ids(self, model: LoadedModel, request: GenerationRequest) -> list[int]:
        tokenizer = model.tokenizer
        if request.raw_prompt is not None:
            ids = tokenizer(request.raw_prompt, add_special_tokens=False)["input_ids"]
        else:
            turns = [{"role": m.role, "content": m.content} for m in request.messages]
            ids = tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "input_ids"):
                ids = ids["input_ids"]
        if any(token >= model.vocab_size for token in request.context):
            raise ApiRequestError(f"context holds token ids outside {model.model_id}'s vocabulary", param="context")
        prompt_ids = [*request.context, *(int(i) for i in ids)]
        if not prompt_ids:
            raise ApiRequestError("the prompt is empty", param="prompt")
        limit = int(getattr(model.config, "max_position_embeddings", 2048))
        if len(prompt_ids) + 1 > limit:
            raise ApiRequestError(f"the prompt is {len(prompt_ids)} tokens; {model.model_id} reads at most {limit}",
                                  param="messages", code="context_length_exceeded")
        return prompt_ids

    def _run(self, model: LoadedModel, request: GenerationRequest, prompt_ids: list[int], started: float,
             load_s: float, on_text: Callable[[str], None], cancelled: Callable[[], bool]) -> GenerationOutcome:
        limit = int(getattr(model.config, "max_position_embeddings", 2048))
        max_new = max(1, min(request.max_new_tokens, self.config.max_new_tokens, limit - len(prompt_ids)))
        mode = request.mode or self.config.default_mode
        collab_client, collab_config = self.collab()
        local = mode == "standalone" or collab_client is None or model.manifest.variant == "edge"
        stream = TextStream(lambda ids: model.decode(list(ids)), request.stop)
        times: list[float] = []
        halted = False

        def on_token(token: DecodedToken) -> None:
            nonlocal halted
            times.append(time.perf_counter())
            if halted:
                return
            delta = stream.push(token.token_id)
            if delta:
                on_text(delta)
            if stream.stopped or cancelled():
                halted = True
                if local:  # a cloud session is closed by its own driver: let a remote answer run out
                    raise _Halt

        gen_started = time.perf_counter()
        fallback = False
        try:
            if local:
                mode = "standalone"
                self._standalone(model, prompt_ids, max_new, request, on_token)
            else:
                config = fit_collab_config(dataclasses.replace(collab_config, mode=mode, **_sampling(mode, request)),
                                           model)
                budget = self.budgets.for_answer(model.model_id, config.mode, config.threshold)
                fallback = collab_generate(model, prompt_ids, max_new, config, collab_client,
                                           on_token=on_token, budget=budget).fallback
        except _Halt:
            pass
        tail = stream.finish()
        if tail:
            on_text(tail)
        token_ids = tuple(stream.token_ids)
        ended = time.perf_counter()
        eos = bool(token_ids) and token_ids[-1] == model.eos_token_id
        first, last = (times[0], times[len(token_ids) - 1]) if token_ids else (ended, ended)
        return GenerationOutcome(
            model_id=model.model_id, mode=mode, text=stream.text, prompt_ids=tuple(prompt_ids), token_ids=token_ids,
            done_reason="stop" if stream.stopped or eos else "length", load_s=load_s,
            prompt_eval_s=first - gen_started, eval_s=last - first, total_s=ended - started, fallback=fallback)

    def _standalone(self, model: LoadedModel, prompt_ids: list[int], max_new: int, request: GenerationRequest,
                    on_token: Callable[[DecodedToken], None]) -> None:
        sampling = request.sampling
        if sampling.temperature > 0:  # exit heads decide greedily: a sampled answer runs the whole model
            seed = sampling.seed if sampling.seed is not None else random.randrange(2**63)
            generator = torch.Generator().manual_seed(seed)
            stepper = LocalStepper(LayerStack(model, 0, model.num_layers), lambda logits: [
                pick_token(row, sampling.temperature, sampling.top_p, generator) for row in logits])
        else:
            policy = model.exit_policy if self.config.early_exit else None
            stepper = LocalStepper(LayerStack(model, 0, model.num_layers, exit_policy=policy))
        with torch.no_grad():
            decode(stepper, [prompt_ids], max_new, eos_token_id=model.eos_token_id, on_token=on_token)


def _sampling(mode: str, request: GenerationRequest) -> dict[str, object]:
    """Speculative decoding samples when asked (edge drafts and cloud acceptance, issue 16); the other
    collaborative modes decide greedily whatever the request says."""
    sampling = request.sampling
    if mode != "speculative" or sampling.temperature <= 0:
        return {}
    seed = sampling.seed if sampling.seed is not None else random.randrange(2**31)
    return {"temperature": sampling.temperature, "top_p": sampling.top_p, "seed": seed % 2**31}
