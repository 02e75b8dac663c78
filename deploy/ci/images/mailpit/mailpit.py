#!/usr/bin/env python3
"""An SMTP sink with the bits of Mailpit's HTTP API that CI reads (messages are kept in memory):

- SMTP on 1025, any sender, any recipient;
- GET /readyz; GET /api/v1/messages (newest first: ID, From, To, Subject);
  GET /api/v1/message/<ID>/raw (the message as received).

`mailpit readyz` (the compose healthcheck) asks the running server's /readyz.
"""

import email
import email.policy
import sys
import threading
import urllib.request
import uuid
from http.server import ThreadingHTTPServer

from aiosmtpd.controller import Controller
from ci_http import QuietHandler

messages: list[dict] = []
lock = threading.Lock()


class Sink:
    async def handle_DATA(self, server, session, envelope) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        entry = {
            "ID": uuid.uuid4().hex,
            "From": {"Address": envelope.mail_from},
            "To": [{"Address": address} for address in envelope.rcpt_tos],
            "Subject": str(parsed["Subject"] or ""),
            "raw": envelope.content,
        }
        with lock:
            messages.insert(0, entry)
        return "250 OK"


class Api(QuietHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/readyz":
            self.reply(200, b"ok", "text/plain")
        elif path == "/api/v1/messages":
            with lock:
                listed = [{k: v for k, v in m.items() if k != "raw"} for m in messages]
            self.reply_json({"total": len(listed), "messages": listed})
        elif path.startswith("/api/v1/message/") and path.endswith("/raw"):
            wanted = path.removeprefix("/api/v1/message/").removesuffix("/raw")
            with lock:
                found = [m["raw"] for m in messages if m["ID"] == wanted]
            if found:
                self.reply(200, found[0], "message/rfc822")
            else:
                self.reply(404, b"not found", "text/plain")
        else:
            self.reply(404, b"not found", "text/plain")


def main() -> None:
    if sys.argv[1:] == ["readyz"]:
        urllib.request.urlopen("http://127.0.0.1:8025/readyz", timeout=2)
        return
    smtp = Controller(Sink(), hostname="0.0.0.0", port=1025)  # noqa: S104
    smtp.start()
    print("SMTP on 1025, API on 8025", flush=True)
    ThreadingHTTPServer(("0.0.0.0", 8025), Api).serve_forever()  # noqa: S104


if __name__ == "__main__":
    main()
