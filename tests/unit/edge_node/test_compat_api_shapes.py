"""Ollama and OpenAI request parsing, response shaping and streamed text: pure, no model, no HTTP."""

import json

import pytest

from edge_node.compat_api import ollama_shapes, openai_shapes
from edge_node.compat_api.requests import ApiRequestError, GenerationOutcome, keep_alive_seconds, model_name
from edge_node.compat_api.text_stream import TextStream
from edge_node.eviction_policy import ModelRecord
from models.manifest import FileEntry, Manifest

MODES = ("standalone", "collaborative", "cloud_only", "naive_split")


def outcome(**changes):
    fields = dict(model_id="m", mode="standalone", text="Paris.", prompt_ids=(1, 2, 3), token_ids=(7, 8, 2),
                  done_reason="stop", load_s=0.5, prompt_eval_s=0.25, eval_s=1.0, total_s=2.0)
    return GenerationOutcome(**{**fields, **changes})


# ---- text stream ---------------------------------------------------------------------------------------

CHARS = {1: "Hel", 2: "lo", 3: " wor", 4: "ld", 5: "\xe2", 6: "\x82\xac"}  # 5 + 6: the bytes of one "€"


def detokenize(ids):
    return "".join(CHARS[i] for i in ids).encode("latin-1").decode("utf-8", errors="replace")


def test_text_stream_concatenated_deltas_equal_the_whole_text():
    stream = TextStream(detokenize)
    deltas = [stream.push(i) for i in (1, 2, 3, 4)] + [stream.finish()]
    assert "".join(deltas) == "Hello world"


def test_text_stream_holds_back_half_a_character():
    stream = TextStream(detokenize)
    stream.push(1)
    assert stream.push(5) == ""
    assert stream.push(6) == "€"


def test_text_stream_ends_before_a_stop_string_split_over_tokens():
    stream = TextStream(detokenize, stop=("o wo",))
    sent = stream.push(1) + stream.push(2)  # "Hello": "o" might begin the stop string
    assert sent == "Hell"
    assert stream.push(3) == ""
    assert stream.stopped
    assert stream.text == "Hell"


def test_text_stream_releases_a_held_back_tail_that_never_became_a_stop_string():
    stream = TextStream(detokenize, stop=("lox",))
    assert stream.push(1) == "He"
    assert stream.finish() == "l"


# ---- common --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "seconds"), [(300, 300.0), ("5m", 300.0), ("1h30m", 5400.0), ("-1", -1.0),
                                                 ("0", 0.0), ("-1m", -60.0), ("1.5s", 1.5), ("250ms", 0.25)])
def test_ollama_keep_alive_accepts_seconds_and_go_durations(value, seconds):
    assert keep_alive_seconds(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["5 minutes", "m", "", [], True, "5x"])
def test_ollama_keep_alive_refuses_what_is_not_a_duration(value):
    with pytest.raises(ApiRequestError, match="keep_alive"):
        keep_alive_seconds(value)


def test_model_name_drops_the_latest_tag():
    assert model_name("smollm2-135m:latest") == "smollm2-135m"


@pytest.mark.parametrize("value", ["../secrets", "a/b", ".hidden", "", 5, None])
def test_model_name_refuses_paths_and_non_names(value):
    with pytest.raises(ApiRequestError):
        model_name(value)


# ---- Ollama --------------------------------------------------------------------------------------------


def test_ollama_generate_body_becomes_a_chat_turn_with_options():
    parsed = ollama_shapes.parse_generate({
        "model": "m", "prompt": "Hi", "system": "Be brief.", "stream": False, "keep_alive": "1m",
        "options": {"num_predict": 12, "temperature": 0.7, "seed": 3, "stop": ["\n"], "mode": "collaborative",
                    "num_ctx": 4096}}, MODES)
    request = parsed.generation
    assert not parsed.stream
    assert [(m.role, m.content) for m in request.messages] == [("system", "Be brief."), ("user", "Hi")]
    assert (request.max_new_tokens, request.sampling.temperature, request.sampling.seed) == (12, 0.7, 3)
    assert request.stop == ("\n",)
    assert request.mode == "collaborative"
    assert request.keep_alive_s == 60.0


def test_ollama_generate_raw_prompt_continues_a_context():
    request = ollama_shapes.parse_generate({"model": "m", "prompt": "abc", "raw": True, "context": [5, 6]},
                                           MODES).generation
    assert request.raw_prompt == "abc"
    assert request.context == (5, 6)
    assert request.messages == ()


def test_ollama_generate_without_prompt_only_loads():
    parsed = ollama_shapes.parse_generate({"model": "m", "keep_alive": 0}, MODES)
    assert parsed.generation is None
    assert parsed.keep_alive_s == 0


@pytest.mark.parametrize(("body", "fragment"), [
    ({"model": "m", "prompt": "x", "options": {"temperature": "hot"}}, "options.temperature"),
    ({"model": "m", "prompt": "x", "options": {"mode": "telepathic"}}, "options.mode"),
    ({"model": "m", "prompt": "x", "format": "json"}, "format"),
    ({"model": "m", "prompt": "x", "images": ["aGk="]}, "text only"),
    ({"model": "m", "prompt": "x", "context": ["a"]}, "context"),
    ({"model": "m", "prompt": "x", "stream": "yes"}, "stream"),
    ({"prompt": "x"}, "model"),
])
def test_ollama_generate_refuses_bad_fields_naming_them(body, fragment):
    with pytest.raises(ApiRequestError, match=fragment) as caught:
        ollama_shapes.parse_generate(body, MODES)
    assert caught.value.status in (400, 404)


@pytest.mark.parametrize(("messages", "fragment"), [
    ([{"role": "wizard", "content": "x"}], "role"),
    ([{"role": "user", "content": 5}], "content"),
    ([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "last"),
    ("hello", "non-empty list"),
])
def test_ollama_chat_refuses_bad_messages(messages, fragment):
    with pytest.raises(ApiRequestError, match=fragment):
        ollama_shapes.parse_chat({"model": "m", "messages": messages}, MODES)


def test_ollama_final_object_carries_timings_in_nanoseconds_and_the_context():
    final = ollama_shapes.generate_final(outcome(), 0.0, "")
    assert final["done"] and final["done_reason"] == "stop"
    assert final["context"] == [1, 2, 3, 7, 8, 2]
    assert (final["total_duration"], final["load_duration"], final["prompt_eval_duration"],
            final["eval_duration"]) == (2_000_000_000, 500_000_000, 250_000_000, 1_000_000_000)
    assert (final["prompt_eval_count"], final["eval_count"]) == (3, 3)


def test_ollama_created_at_is_rfc3339_with_nanoseconds():
    assert ollama_shapes.created_at(1.5) == "1970-01-01T00:00:01.500000000Z"


def test_ollama_ps_reports_a_pinned_model_without_expiry():
    record = ModelRecord("m", 10, 1.0, 2.0, None, True, 0, False)
    manifest = Manifest("m", "LlamaForCausalLM", 30, 576, 49152, 134_515_008, 10, "float32", "fp32", "test",
                        files={"model.safetensors": FileEntry(10, "ab")})
    model = ollama_shapes.ps([record], {"m": manifest})["models"][0]
    assert model["expires_at"] is None and model["pinned"]
    assert model["details"]["parameter_size"] == "134.5M"
    assert model["details"]["quantization_level"] == "F32"


# ---- OpenAI --------------------------------------------------------------------------------------------


def test_openai_body_takes_max_completion_tokens_stop_and_mode():
    parsed = openai_shapes.parse_chat_completion({
        "model": "m", "messages": [{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                                   {"role": "user", "content": "Hi"}],
        "max_completion_tokens": 9, "stop": "END", "stream": True, "stream_options": {"include_usage": True},
        "mode": "cloud_only"}, MODES)
    request = parsed.generation
    assert [(m.role, m.content) for m in request.messages] == [("system", "Be brief."), ("user", "Hi")]
    assert (request.max_new_tokens, request.stop, request.mode) == (9, ("END",), "cloud_only")
    assert parsed.stream and parsed.include_usage


@pytest.mark.parametrize(("body", "param"), [
    ({"n": 2}, "n"), ({"temperature": 3}, "temperature"), ({"tools": [{"type": "function"}]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"), ({"max_tokens": 0}, "max_tokens"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content"),
])
def test_openai_refuses_what_the_edge_does_not_do_naming_the_param(body, param):
    with pytest.raises(ApiRequestError) as caught:
        openai_shapes.parse_chat_completion({"model": "m", "messages": [{"role": "user", "content": "x"}], **body},
                                            MODES)
    assert caught.value.param == param
    assert caught.value.status == 400


def test_openai_completion_has_usage_and_finish_reason():
    body = openai_shapes.completion("c-1", 5, outcome(done_reason="length"))
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Paris."}
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}


def test_openai_error_object_has_the_shape_the_client_reads():
    body = openai_shapes.error("no such model", 404, "model", "model_not_found")
    assert body == {"error": {"message": "no such model", "type": "invalid_request_error", "param": "model",
                              "code": "model_not_found"}}


def test_openai_sse_event_is_one_data_line():
    assert openai_shapes.sse({"a": 1}) == b'data: {"a":1}\n\n'
    assert json.loads(openai_shapes.sse({"a": 1})[6:]) == {"a": 1}
    assert openai_shapes.sse("[DONE]") == b"data: [DONE]\n\n"
