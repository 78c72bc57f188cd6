"""Engineering team: plans and ships software.

A2A-style HTTP wrapper: GET /.well-known/agent.json describes the agent, GET /health reports
liveness. Standard library only, so the image needs nothing beyond Python.
"""
import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

NAME = "engineering-team"
PORT = int(os.environ.get("PORT", "8092"))
CARD = {
    "name": NAME,
    "description": "Engineering team: plans and ships software.",
    "url": f"http://{NAME}:{PORT}",
    "capabilities": {"streaming": False},
}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/.well-known/agent.json":
            body, status = json.dumps(CARD).encode(), 200
        elif self.path == "/health":
            body, status = b'{"status": "ok"}', 200
        else:
            body, status = b'{"error": "not found"}', 404
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    print(f"{NAME} listening on :{PORT}", flush=True)
    HTTPServer(("", PORT), Handler).serve_forever()
