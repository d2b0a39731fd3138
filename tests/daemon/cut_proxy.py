# cut_proxy.py: a TCP proxy for tests/daemon/resume.sh that cuts
# connections on purpose and counts the bytes it forwards. Every
# connection to 127.0.0.1:PORT (printed) is forwarded to 127.0.0.1:TARGET.
# The first connection that carries more than UP bytes from the client is
# closed (both ways) after exactly UP of them; likewise the first one past
# DOWN bytes from the server (0: never). When a connection ends, STATS
# (a file) is rewritten: {"up": [bytes per connection...], "down": [...],
# "open": connections still open}.
# Usage: cut_proxy.py TARGET UP DOWN STATS
import json, os, socket, sys, threading

target, cut_up, cut_down, stats_path = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
lock = threading.Lock()
cuts = {"up": cut_up, "down": cut_down}
stats = {"up": [], "down": [], "open": 0}


def pump(src, dst, way, counts, i, done):
    n = 0
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            with lock:
                budget = cuts[way]
                if budget and n + len(data) >= budget:
                    cuts[way] = 0
                    data = data[: budget - n]
                    dst.sendall(data)
                    n += len(data)
                    counts[i] = n
                    raise ConnectionAbortedError
            dst.sendall(data)
            n += len(data)
            counts[i] = n
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        done.set()


def serve(client):
    server = socket.create_connection(("127.0.0.1", target))
    with lock:
        i = len(stats["up"])
        stats["up"].append(0)
        stats["down"].append(0)
        stats["open"] += 1
    up_done, down_done = threading.Event(), threading.Event()
    threading.Thread(target=pump, args=(client, server, "up", stats["up"], i, up_done), daemon=True).start()
    threading.Thread(target=pump, args=(server, client, "down", stats["down"], i, down_done), daemon=True).start()
    up_done.wait()
    down_done.wait()
    client.close()
    server.close()
    with lock:
        stats["open"] -= 1
        with open(stats_path + ".tmp", "w") as f:
            json.dump(stats, f)
        os.replace(stats_path + ".tmp", stats_path)


ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 0))
ls.listen(16)
print(ls.getsockname()[1], flush=True)
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
