"""The official `ollama` and `openai` clients against a running edge: real Mosquitto, real SmolLM2, real cloud node."""

from __future__ import annotations

import dataclasses

import httpx
import ollama
import openai
import pytest

from broker.config import BusConfig
from broker.launcher import BrokerConfig, LocalBroker, free_port
from cloud_node.config import CloudConfig
from cloud_node.service import CloudService
from edge_node.config import EdgeConfig
from edge_node.service import EdgeService
from models.paths import default_store_root
from tests.conftest import wait_until

pytestmark = pytest.mark.slow

MODEL, SMALL = "smollm2-135m", "smollm2-135m-int8"
HELLO = [{"role": "user", "content": "What is the capital of France?"}]
TOKENS = 6  # a loaded 2-core machine makes about 2 tokens a second: short answers keep the module quick


@pytest.fixture(scope="module")
def bus(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("broker")
    config = BrokerConfig(port=free_port(), state_dir=str(tmp / "state"), secrets_dir=str(tmp / "secrets"),
                          edge_users=("pi-01",), cloud_users=("cloud-1",))
    with LocalBroker(config):
        yield BusConfig(port=config.port, password_file=str(tmp / "secrets" / "{node}.password"), keepalive_s=5)


@pytest.fixture(scope="module")
def cloud(bus, tmp_path_factory):
    config = dataclasses.replace(CloudConfig(), node_id="cloud-1", bus=bus, model_store=str(default_store_root()),
                                 state_dir=str(tmp_path_factory.mktemp("cloud")), heartbeat_interval_s=1.0)
    service = CloudService(config).start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def edge(bus, cloud, tmp_path_factory):
    config = dataclasses.replace(EdgeConfig(), node_id="pi-01", bus=bus, http_port=0,
                                 state_dir=str(tmp_path_factory.mktemp("edge")), model_store=str(default_store_root()),
                                 heartbeat_interval_s=1.0, cloud_deadline_s=30.0)
    service = EdgeService(config).start()
    yield service
    service.stop()


@pytest.fixture
def ollama_client(edge):
    return ollama.Client(host=edge.http.url, timeout=300)


@pytest.fixture
def openai_client(edge):
    return openai.OpenAI(base_url=f"{edge.http.url}/v1", api_key="unused-on-loopback", timeout=300, max_retries=0)


# ---- Ollama --------------------------------------------------------------------------------------------


def test_ollama_generate_streams_text_and_ends_with_timings(ollama_client):
    parts = list(ollama_client.generate(model=MODEL, prompt="What is the capital of France?", stream=True,
                                        options={"num_predict": TOKENS}))
    final = parts[-1]
    assert final.done and all(not part.done for part in parts[:-1])
    assert "".join(part.response for part in parts)
    assert 1 <= final.eval_count <= TOKENS
    assert final.prompt_eval_count > 5
    assert final.total_duration >= final.prompt_eval_duration + final.eval_duration > 0
    assert final.done_reason in ("stop", "length")


def test_ollama_generate_without_streaming_equals_the_streamed_text(ollama_client):
    streamed = "".join(p.response for p in ollama_client.generate(model=MODEL, prompt="Name a colour.", stream=True,
                                                                  options={"num_predict": TOKENS}))
    whole = ollama_client.generate(model=MODEL, prompt="Name a colour.", stream=False, options={"num_predict": TOKENS})
    assert whole.response == streamed
    assert whole.context[-whole.eval_count:]  # prompt and answer ids, to continue from


def test_ollama_chat_streams_the_assistant_message(ollama_client):
    parts = list(ollama_client.chat(model=MODEL, messages=HELLO, stream=True, options={"num_predict": TOKENS}))
    assert all(part.message.role == "assistant" for part in parts)
    assert "Paris" in "".join(part.message.content for part in parts)
    assert parts[-1].done and parts[-1].eval_count >= 1


def test_ollama_chat_num_predict_ends_the_answer_with_length(ollama_client):
    response = ollama_client.chat(model=MODEL, messages=[{"role": "user", "content": "Tell me a long story."}],
                                  options={"num_predict": 3})
    assert response.eval_count == 3
    assert response.done_reason == "length"


def test_ollama_chat_stop_string_ends_the_answer_before_it(ollama_client):
    free = ollama_client.chat(model=MODEL, messages=HELLO, options={"num_predict": TOKENS}).message.content
    stop = free.split()[2]  # "The capital of ...": the third word
    stopped = ollama_client.chat(model=MODEL, messages=HELLO, options={"num_predict": TOKENS, "stop": [stop]})
    assert stopped.message.content == free[: free.index(stop)]
    assert stopped.done_reason == "stop"


def test_ollama_list_shows_every_model_in_the_store(ollama_client, edge):
    names = {model.model for model in ollama_client.list().models}
    assert names == set(edge.store.list())


def test_ollama_ps_shows_the_loaded_model_with_its_expiry(ollama_client):
    ollama_client.generate(model=MODEL, prompt="Hi", options={"num_predict": 1}, keep_alive="10m")
    loaded = {model.model: model for model in ollama_client.ps().models}
    assert MODEL in loaded
    assert loaded[MODEL].size > 100_000_000
    assert loaded[MODEL].expires_at is not None


def test_ollama_keep_alive_zero_unloads_the_model_after_the_answer(ollama_client):
    ollama_client.generate(model=SMALL, prompt="Hi", options={"num_predict": 1}, keep_alive=0)
    assert wait_until(lambda: SMALL not in {m.model for m in ollama_client.ps().models}, 10)


def test_ollama_generate_without_prompt_loads_and_keep_alive_zero_unloads(ollama_client):
    assert ollama_client.generate(model=SMALL, keep_alive="5m").done_reason == "load"
    assert SMALL in {m.model for m in ollama_client.ps().models}
    assert ollama_client.generate(model=SMALL, keep_alive=0).done_reason == "unload"
    assert SMALL not in {m.model for m in ollama_client.ps().models}


def test_ollama_show_reports_the_architecture(ollama_client):
    shown = ollama_client.show(MODEL)
    assert shown.modelinfo["llama.block_count"] == 30
    assert shown.modelinfo["llama.embedding_length"] == 576
    assert shown.details.family == "llama"
    assert "im_start" in shown.template


def test_ollama_latest_tag_names_the_same_model(ollama_client):
    assert ollama_client.generate(model=f"{MODEL}:latest", prompt="Hi", options={"num_predict": 1}).eval_count == 1


def test_ollama_unknown_model_raises_response_error_404(ollama_client):
    with pytest.raises(ollama.ResponseError) as caught:
        ollama_client.chat(model="no-such-model", messages=HELLO)
    assert caught.value.status_code == 404
    assert "not found" in caught.value.error


def test_ollama_unknown_model_while_streaming_raises_response_error_404(ollama_client):
    with pytest.raises(ollama.ResponseError) as caught:
        list(ollama_client.generate(model="no-such-model", prompt="x", stream=True))
    assert caught.value.status_code == 404


def test_ollama_bad_option_raises_response_error_400(ollama_client):
    with pytest.raises(ollama.ResponseError) as caught:
        ollama_client.chat(model=MODEL, messages=HELLO, options={"temperature": "warm"})
    assert caught.value.status_code == 400
    assert "options.temperature" in caught.value.error


def test_ollama_unknown_mode_raises_response_error_400(ollama_client):
    with pytest.raises(ollama.ResponseError) as caught:
        ollama_client.chat(model=MODEL, messages=HELLO, options={"mode": "telepathic"})
    assert caught.value.status_code == 400


def test_ollama_context_outside_the_vocabulary_raises_response_error_400(ollama_client):
    with pytest.raises(ollama.ResponseError) as caught:
        ollama_client.generate(model=MODEL, prompt="Hi", context=[10**9])
    assert caught.value.status_code == 400
    assert "vocabulary" in caught.value.error


def test_ollama_malformed_body_gets_an_error_object(edge):
    response = httpx.post(f"{edge.http.url}/api/chat", content=b"{not json", timeout=30)
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]


def chat_final(edge, **options):
    """The final object as sent (the client's response model drops the edge's extra fields: mode, fallback)."""
    body = {"model": MODEL, "messages": HELLO, "stream": False, "options": options}
    response = httpx.post(f"{edge.http.url}/api/chat", json=body, timeout=300)
    assert response.status_code == 200, response.text
    return response.json()


def test_ollama_mode_option_runs_the_answer_in_the_cloud(edge):
    final = chat_final(edge, num_predict=TOKENS, mode="cloud_only")
    assert final["mode"] == "cloud_only"
    assert not final["fallback"]
    assert "Paris" in final["message"]["content"]


def test_ollama_mode_defaults_to_the_edges_setting(edge):
    assert chat_final(edge, num_predict=2)["mode"] == edge.config.api_mode


# ---- OpenAI --------------------------------------------------------------------------------------------


def test_openai_chat_completion_answers_with_usage(openai_client):
    completion = openai_client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=TOKENS)
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert "Paris" in choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage.completion_tokens <= TOKENS
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_openai_streamed_deltas_join_to_the_non_streamed_answer(openai_client):
    whole = openai_client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=TOKENS)
    chunks = list(openai_client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=TOKENS, stream=True,
                                                        stream_options={"include_usage": True}))
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_openai_max_tokens_ends_with_finish_reason_length(openai_client):
    completion = openai_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Tell me a long story."}], max_tokens=2)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 2


def test_openai_models_lists_the_store(openai_client, edge):
    assert {model.id for model in openai_client.models.list()} == set(edge.store.list())
    assert openai_client.models.retrieve(MODEL).owned_by == "edgefleet"


def test_openai_unknown_model_raises_not_found(openai_client):
    with pytest.raises(openai.NotFoundError) as caught:
        openai_client.chat.completions.create(model="no-such-model", messages=HELLO)
    assert caught.value.code == "model_not_found"


def test_openai_unknown_model_while_streaming_raises_not_found(openai_client):
    with pytest.raises(openai.NotFoundError):
        list(openai_client.chat.completions.create(model="no-such-model", messages=HELLO, stream=True))


def test_openai_bad_request_raises_bad_request_naming_the_param(openai_client):
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client.chat.completions.create(model=MODEL, messages=HELLO, n=2)
    assert caught.value.param == "n"


def test_openai_mode_in_extra_body_runs_collaboratively(openai_client):
    completion = openai_client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=TOKENS,
                                                       extra_body={"mode": "collaborative"})
    assert completion.model_extra["edgefleet"]["mode"] == "collaborative"
    assert not completion.model_extra["edgefleet"]["fallback"]
    assert completion.choices[0].message.content


def test_openai_edge_stays_healthy_after_bad_requests(openai_client, edge):
    for body in (b"", b"[]", b'{"model": 5}', b'{"model": "m", "messages": "hi"}', b"\xff" * 10):
        response = httpx.post(f"{edge.http.url}/v1/chat/completions", content=body, timeout=30)
        assert response.status_code in (400, 404)
        assert "message" in response.json()["error"]
    assert httpx.get(f"{edge.http.url}/health", timeout=10).json()["status"] == "ok"


def test_ollama_client_that_goes_away_ends_the_answer_early(ollama_client, edge):
    stream = ollama_client.generate(model=MODEL, prompt="Tell me a very long story about the sea.", stream=True,
                                    options={"num_predict": 400}, keep_alive="10m")
    next(stream)
    next(stream)
    stream.close()  # closes the HTTP response: the edge stops at its next token instead of making 400
    assert wait_until(lambda: all(r.in_use == 0 for r in edge.cache.status()), 5)  # 400 tokens take > 10 s


def test_openai_speculative_mode_gives_the_cloud_only_answer(openai_client):
    answers = {}
    for mode in ("cloud_only", "speculative"):
        completion = openai_client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=TOKENS,
                                                           extra_body={"mode": mode})
        assert completion.model_extra["edgefleet"]["mode"] == mode
        assert not completion.model_extra["edgefleet"]["fallback"]
        answers[mode] = completion.choices[0].message.content
    assert answers["speculative"] == answers["cloud_only"]  # greedy speculative decoding is lossless


def test_ollama_temperature_with_a_seed_repeats_its_sampled_answer(ollama_client):
    def sampled(seed):
        options = {"num_predict": TOKENS, "temperature": 1.5, "seed": seed}
        return ollama_client.generate(model=MODEL, prompt="Name an animal.", options=options).response

    assert sampled(7) == sampled(7)


def test_openai_temperature_reaches_speculative_decoding(openai_client):
    def answer(**sampling):
        return openai_client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=TOKENS,
                                                     extra_body={"mode": "speculative"}, **sampling)

    greedy, hot = answer(), answer(temperature=2.0, seed=11)
    assert hot.model_extra["edgefleet"]["mode"] == "speculative" and not hot.model_extra["edgefleet"]["fallback"]
    # At temperature 2 over 49,152 tokens, six draws landing on the greedy answer's tokens is not a chance event.
    assert hot.choices[0].message.content != greedy.choices[0].message.content
