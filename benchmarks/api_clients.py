"""One streamed answer through an official client, timed as the client sees it (a process of its own, as a user's).

`python -m benchmarks.api_clients --client ollama --url http://127.0.0.1:8081 --model smollm2-135m
--prompt "..." --tokens 48` prints one JSON object as its last line: tokens (the server's count),
first_s (request to the first text), last_s (request to the end of the stream) and
decode_tokens_per_s = (tokens - 1) / (last_s - first_s), the rate after the first token, and
server_tokens_per_s, the same answer's rate as the node measured it (its eval timings).
benchmarks/edge.py runs it beside the node's own rate.
"""

from __future__ import annotations

import argparse
import json
import time


def ollama_stream(url: str, model: str, prompt: str, tokens: int) -> tuple[int, float, float, float]:
    import ollama

    client = ollama.Client(host=url, timeout=600)
    start, first, count, server_s = time.perf_counter(), 0.0, 0, 0.0
    for part in client.chat(model=model, messages=[{"role": "user", "content": prompt}], stream=True,
                            options={"num_predict": tokens, "temperature": 0}):
        if part.message.content and not first:
            first = time.perf_counter() - start
        if part.done:
            count, server_s = part.eval_count or 0, (part.eval_duration or 0) / 1e9
    return count, first, time.perf_counter() - start, server_s


def openai_stream(url: str, model: str, prompt: str, tokens: int) -> tuple[int, float, float, float]:
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="benchmark", timeout=600, max_retries=0)
    start, first, count, server_s = time.perf_counter(), 0.0, 0, 0.0
    for chunk in client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                max_tokens=tokens, temperature=0, stream=True,
                                                stream_options={"include_usage": True}):
        if chunk.choices and chunk.choices[0].delta.content and not first:
            first = time.perf_counter() - start
        if chunk.usage is not None:
            count, server_s = chunk.usage.completion_tokens, chunk.model_extra["edgefleet"]["eval_s"]
    return count, first, time.perf_counter() - start, server_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.api_clients", description=__doc__)
    parser.add_argument("--client", choices=("ollama", "openai"), required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--tokens", type=int, default=48)
    args = parser.parse_args(argv)
    stream = ollama_stream if args.client == "ollama" else openai_stream
    count, first_s, last_s, server_s = stream(args.url, args.model, args.prompt, args.tokens)
    rate = (count - 1) / (last_s - first_s) if count > 1 and last_s > first_s else 0.0
    server_rate = (count - 1) / server_s if count > 1 and server_s > 0 else 0.0
    print(json.dumps({"client": args.client, "tokens": count, "first_s": round(first_s, 4), "last_s": round(last_s, 4),
                      "decode_tokens_per_s": round(rate, 2), "server_tokens_per_s": round(server_rate, 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
