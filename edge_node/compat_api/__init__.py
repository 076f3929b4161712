"""Ollama- and OpenAI-compatible HTTP APIs of the edge: pure request parsing and response shaping, one engine."""
