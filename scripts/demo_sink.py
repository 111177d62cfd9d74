#!/usr/bin/env python3
"""A tiny destination for local runs: accepts POSTs, verifies Inlet's Standard Webhooks
signature with the destination secret, and prints one line per delivery. A body containing
`inlet_demo_fail_once` is refused (422, a permanent failure) the first time its Idempotency-Key is
seen, so the run command can show a dead letter and its replay from the console.

Usage: demo_sink.py PORT SECRET   (SECRET is the destination's whsec_... signing_secret)
"""
import base64
import hashlib
import hmac
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
SECRET = sys.argv[2]
KEY = base64.b64decode(SECRET.removeprefix("whsec_"))
REFUSED_ONCE = set()


class Sink(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server naming)
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        signed = f"{self.headers['webhook-id']}.{self.headers['webhook-timestamp']}.".encode() + body
        expected = base64.b64encode(hmac.new(KEY, signed, hashlib.sha256).digest()).decode()
        presented = [s.split(",", 1)[1] for s in self.headers.get("webhook-signature", "").split() if "," in s]
        valid = any(hmac.compare_digest(expected, p) for p in presented)
        key = self.headers.get("idempotency-key")
        if valid and b"inlet_demo_fail_once" in body and key not in REFUSED_ONCE:
            REFUSED_ONCE.add(key)
            print(f"demo-sink: delivery {key} refused with 422 (demo: replay it from the console)", flush=True)
            self.send_response(422)
            self.end_headers()
            return
        print(
            f"demo-sink: delivery {self.headers.get('idempotency-key')} "
            f"source={self.headers.get('inlet-source')} type={self.headers.get('inlet-event-type')} "
            f"bytes={len(body)} inlet_signature={'valid' if valid else 'INVALID'}",
            flush=True,
        )
        self.send_response(200 if valid else 401)
        self.end_headers()

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Sink).serve_forever()
