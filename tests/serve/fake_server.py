"""A stand-in for llama-server in fast tests: same flags, a /health route, scripted failures.

Environment:
  FAKE_SERVER_FAIL       print this line to stderr and exit 1 before listening
  FAKE_SERVER_PIDFILE    write the process id here once listening
  FAKE_SERVER_ARGVFILE   write the command line (JSON) here
  FAKE_SERVER_EXIT_AFTER exit with code 3 this many seconds after becoming ready
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path in ("/health", "/v1/health"):
            body = b'{"status":"ok"}'
        elif self.path == "/v1/models":
            body = json.dumps({"data": [{"id": self.server.alias}]}).encode()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--alias", default="fake")
    args, _ = parser.parse_known_args()
    if os.environ.get("FAKE_SERVER_ARGVFILE"):
        with open(os.environ["FAKE_SERVER_ARGVFILE"], "w") as fh:
            json.dump({"argv": sys.argv, "api_key": os.environ.get("LLAMA_API_KEY")}, fh)
    print("fake server: loading model", file=sys.stderr, flush=True)
    if os.environ.get("FAKE_SERVER_FAIL"):
        print(os.environ["FAKE_SERVER_FAIL"], file=sys.stderr, flush=True)
        sys.exit(1)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.alias = args.alias
    if os.environ.get("FAKE_SERVER_PIDFILE"):
        with open(os.environ["FAKE_SERVER_PIDFILE"], "w") as fh:
            fh.write(str(os.getpid()))
    exit_after = os.environ.get("FAKE_SERVER_EXIT_AFTER")
    if exit_after:
        def stop_later():
            time.sleep(float(exit_after))
            print("fake server: crashed: simulated failure", file=sys.stderr, flush=True)
            os._exit(3)
        threading.Thread(target=stop_later, daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
