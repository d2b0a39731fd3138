# flaky_http.py: a tiny artifact store for tests/deploy/store.sh that drops
# connections on purpose. PUT /a/SHA stores the body when its sha256 is SHA
# (201; 400 otherwise); the first DROP uploads are cut after 1 KiB (the
# connection closes without an answer). GET /a/SHA serves it; the first
# STALL downloads send half the body then close. GET /stats: JSON counts.
# Listens on 127.0.0.1, prints its port. Usage: flaky_http.py DROP STALL
import hashlib, http.server, json, socket, sys

drop, stall = int(sys.argv[1]), int(sys.argv[2])
store, stats = {}, {"put": 0, "put_ok": 0, "get": 0}


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _answer(self, code, body=b""):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self):
        global drop
        stats["put"] += 1
        n = int(self.headers.get("Content-Length", "0"))
        if drop > 0:
            drop -= 1
            self.rfile.read(min(n, 1024))
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        body = self.rfile.read(n)
        sha = self.path.rsplit("/", 1)[-1]
        if hashlib.sha256(body).hexdigest() != sha:
            return self._answer(400, b'{"error":"hash mismatch"}')
        store[sha] = body
        stats["put_ok"] += 1
        self._answer(201, b"{}")

    def do_GET(self):
        global stall
        if self.path == "/stats":
            return self._answer(200, json.dumps(stats).encode())
        stats["get"] += 1
        body = store.get(self.path.rsplit("/", 1)[-1])
        if body is None:
            return self._answer(404)
        if stall > 0:
            stall -= 1
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self._answer(200, body)


srv = http.server.HTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
