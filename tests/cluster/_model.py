"""A loopback Chat Completions server for cluster tests: the Ray nodes' agents reach it over 127.0.0.1.

A user's message `call <tool> <json arguments>` gets a call to that tool; tool results get the final answer,
`done: <results>`. Every request is recorded, so a test counts the model calls each turn made.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

APP = """
namespace: app
entries:
  - name: m
    kind: model
    provider: openai-compatible
    base_url: {base_url}
    model: m
    max_retries: 0
    timeout: 60
  - name: agent
    kind: agent
    model: app:m
    prompt: prompts:agent
    tools: ["tools.*:*"]
    max_steps: 4
"""


class ChatServer:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, int]] = []  # (the user's message, which model call of its turn)
        self.system: list[str] = []  # the system prompt of each request
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._http.daemon_threads = True
        self._thread = threading.Thread(target=self._http.serve_forever, args=(0.01,), daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}/v1"

    def calls(self, message: str) -> list[int]:
        with self.lock:
            return [call for text, call in self.requests if text == message]

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._thread.join()

    def _answer(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        messages = body["messages"]
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        text = messages[last_user]["content"]
        call = 1 + sum(m["role"] == "assistant" for m in messages[last_user + 1:])
        with self.lock:
            self.requests.append((text, call))
            self.system.append(next((m["content"] for m in messages if m["role"] == "system"), ""))
        if call == 1:
            _, tool, arguments = text.split(" ", 2)
            wire = {"index": 0, "id": f"call-{len(self.requests)}", "type": "function",
                    "function": {"name": tool, "arguments": arguments}}
            return [_chunk({"role": "assistant", "content": None, "tool_calls": [wire]}), _chunk({}, "tool_calls")]
        results = [m["content"] for m in messages[last_user + 1:] if m["role"] == "tool"]
        return [_chunk({"role": "assistant", "content": "done: " + "; ".join(results)}), _chunk({}, "stop")]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                chunks = server._answer(body)
                chunks.append({**_chunk(None), "usage": {"prompt_tokens": 3, "completion_tokens": 2,
                                                          "total_tokens": 5}})
                payload = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


def _chunk(delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": choices,
            "usage": None}
