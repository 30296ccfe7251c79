"""A local HTTP server speaking the OpenAI chat-completions format, for judge tests.

The stub judge prefers the answer containing MARKER, returns a reply without a verdict when
an answer contains GARBLE, and can be told to fail with HTTP 500 a number of times. Without
a clear preference it shows position bias (summary task: always "A"), which is exactly what
judging in both orders must cancel.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SUMMARY_ANSWERS = re.compile(r"Summary A:\n(.*?)\n\nSummary B:\n(.*?)\n\nFIRST", re.S)
DIALOGUE_ANSWERS = re.compile(
    r"\[The Start of Assistant A's Answer\]\n(.*?)\n\[The End of Assistant A's Answer\]\n"
    r"\[The Start of Assistant B's Answer\]\n(.*?)\n\[The End of Assistant B's Answer\]",
    re.S,
)


def stub_reply(messages: list[dict]) -> str:
    """The stub's deterministic judgement of one request."""
    text = messages[-1]["content"]
    summary = messages[0]["role"] == "user"
    answer_a, answer_b = (SUMMARY_ANSWERS if summary else DIALOGUE_ANSWERS).search(text).groups()
    if "GARBLE" in answer_a + answer_b:
        return "Both are lovely; I really could not say."
    good_a, good_b = "MARKER" in answer_a, "MARKER" in answer_b
    if summary:
        choice = "B" if good_b and not good_a else "A"
        return f"Comparison: Summary {choice} is more precise.\nPreferred: {choice}"
    choice = "A" if good_a and not good_b else "B" if good_b and not good_a else "C"
    return f"Assistant {choice} follows the format better. [[{choice}]]"


class StubHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        stub = self.server.stub
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with stub.lock:
            stub.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
            fail = stub.fail_next > 0
            stub.fail_next -= fail
        if fail:
            self.send_error(500, "stub told to fail")
            return
        if self.path != "/v1/chat/completions":
            self.send_error(404)
            return
        content = stub_reply(body["messages"])
        payload = {
            "id": f"chatcmpl-{len(stub.requests)}",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.send_error(404)  # like servers without /v1/models: still proves reachability

    def log_message(self, *args) -> None:
        pass


class StubServer:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.fail_next = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), StubHandler)
        self.httpd.daemon_threads = True
        self.httpd.stub = self
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"
