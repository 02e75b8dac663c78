"""What the CI stand-ins' HTTP APIs share (installed in taskhub-ci/python): a request handler
that answers in one call and keeps quiet about each request."""

import json
from http.server import BaseHTTPRequestHandler


class QuietHandler(BaseHTTPRequestHandler):
    def reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def reply_json(self, body: dict) -> None:
        self.reply(200, json.dumps(body).encode(), "application/json")

    def log_message(self, format: str, *args) -> None:
        pass  # a healthcheck or an export every few seconds is noise
