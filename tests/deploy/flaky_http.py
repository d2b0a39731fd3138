# flaky_http.py: a tiny artifact store for tests/deploy/store.sh that drops
# connections on purpose. It speaks modulad's resumable upload protocol
# (docs/api.md): GET /a/SHA/upload answers the bytes held; PUT /a/SHA/upload
# with Content-Range: bytes N-LAST/TOTAL appends a part starting at the
# held bytes, and stores the artifact (201) when all are there and their
# sha256 is SHA (400 otherwise). The first DROP parts are cut after 1 KiB
# (kept, as modulad keeps them; the connection closes without an answer).
# GET /a/SHA serves it (Range: bytes=N- gives 206); the first STALL
# downloads send half the body then close. GET /stats: JSON counts, with
# the body bytes of all parts (put_bytes) and of all downloads (get_bytes).
# Listens on 127.0.0.1, prints its port. Usage: flaky_http.py DROP STALL
import hashlib, http.server, json, re, socket, sys

drop, stall = int(sys.argv[1]), int(sys.argv[2])
store, held = {}, {}
stats = {"put": 0, "put_ok": 0, "put_bytes": 0, "get": 0, "get_bytes": 0}


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
        sha = self.path.split("/")[2]
        first, last, total = map(int, re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", self.headers["Content-Range"]).groups())
        part = held.setdefault(sha, bytearray())
        if first != len(part):
            self.rfile.read(n)
            return self._answer(409, b'{"error":"wrong offset"}')
        if drop > 0:
            drop -= 1
            got = self.rfile.read(min(n, 1024))
            part += got
            stats["put_bytes"] += len(got)
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        body = self.rfile.read(n)
        stats["put_bytes"] += len(body)
        part += body
        if len(part) < total:
            return self._answer(200, json.dumps({"offset": len(part), "complete": False}).encode())
        del held[sha]
        if hashlib.sha256(part).hexdigest() != sha:
            return self._answer(400, b'{"error":"hash mismatch"}')
        store[sha] = bytes(part)
        stats["put_ok"] += 1
        self._answer(201, b"{}")

    def do_GET(self):
        global stall
        if self.path == "/stats":
            return self._answer(200, json.dumps(stats).encode())
        sha = self.path.split("/")[2]
        if self.path.endswith("/upload"):
            done = sha in store
            body = json.dumps({"offset": len(store[sha]) if done else len(held.get(sha, b"")), "complete": done})
            return self._answer(200, body.encode())
        stats["get"] += 1
        body = store.get(sha)
        if body is None:
            return self._answer(404)
        rng = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        first = int(rng.group(1)) if rng else 0
        if stall > 0:
            stall -= 1
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            stats["get_bytes"] += len(body) // 2
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        stats["get_bytes"] += len(body) - first
        if not rng:
            return self._answer(200, body)
        self.send_response(206)
        self.send_header("Content-Length", str(len(body) - first))
        self.send_header("Content-Range", "bytes %d-%d/%d" % (first, len(body) - 1, len(body)))
        self.end_headers()
        self.wfile.write(body[first:])


srv = http.server.HTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
