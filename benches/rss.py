#!/usr/bin/env python3
"""Peak RSS of `engage import` on a large NDJSON file, at default settings.

Generates the input (1 GB by default, deterministic) unless it exists, starts a loopback
sink that answers every request like Mixpanel (`{"error":null,"status":1}`) without keeping
anything, runs the release `engage import FILE --endpoint http://127.0.0.1:PORT --token t
--quiet --report json`, and prints the child's peak RSS (from wait4's rusage) with the
report.

    cargo build --release -p engage-cli
    python3 benches/rss.py [--size-mb 1024] [--file /tmp/engage-1g.ndjson]

A measurement, not a test: it asserts nothing and is not run by CI.
"""

import argparse
import http.server
import json
import os
import random
import socketserver
import subprocess
import sys
import threading
import time

CITIES = ["Kraków", "São Paulo", "Zürich", "Reykjavík", "Malmö", "Paris"]
PLANS = ["free", "pro", "team", "enterprise"]
TAGS = ["beta", "vip", "eu", "mobile", "trial", "churn-risk"]


def record(rng, i):
    uid = f"user-{rng.randrange(2_000_000)}"
    k = rng.randrange(100)
    if k < 40:
        op = {"$set": {"$name": f"User {i}", "city": rng.choice(CITIES), "plan": rng.choice(PLANS),
                       "seats": rng.randrange(500), "score": rng.randrange(10000) / 7,
                       "note": "said \"hi\" \\ then\nleft\t😀"}}
    elif k < 55:
        op = {"$set_once": {"first_seen": "2024-03-01T09:30:00", "source": "ads"}}
    elif k < 70:
        op = {"$add": {"logins": 1 + rng.randrange(3)}}
    elif k < 80:
        op = {"$union": {"tags": [rng.choice(TAGS), rng.choice(TAGS)]}}
    elif k < 85:
        op = {"$append": {"events": f"event-{rng.randrange(50)}"}}
    elif k < 90:
        op = {"$remove": {"tags": rng.choice(TAGS)}}
    elif k < 95:
        op = {"$unset": ["city"]}
    else:
        op = {"$delete": ""}
    rec = {"$distinct_id": uid, **op}
    if rng.randrange(100) < 20:
        rec["$ip"] = f"203.0.113.{rng.randrange(255)}"
    return json.dumps(rec, ensure_ascii=False)


def generate(path, size):
    rng = random.Random(2026)
    written, i = 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size:
            lines = []
            for _ in range(10_000):
                lines.append(record(rng, i))
                i += 1
            chunk = "\n".join(lines) + "\n"
            f.write(chunk)
            written += len(chunk.encode("utf-8"))
    return i


class Sink(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    requests = 0

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        remaining = length
        while remaining > 0:
            chunk = self.rfile.read(min(remaining, 1 << 20))
            if not chunk:
                break
            remaining -= len(chunk)
        Sink.requests += 1
        body = b'{"error":null,"status":1}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=1024)
    ap.add_argument("--file", default="/tmp/engage-1g.ndjson")
    ap.add_argument("--engage", default="target/release/engage")
    args = ap.parse_args()
    size = args.size_mb * 1024 * 1024
    if not os.path.exists(args.file) or os.path.getsize(args.file) < size:
        t = time.time()
        n = generate(args.file, size)
        print(f"generated {args.file}: {n} records in {time.time() - t:.0f} s", file=sys.stderr)
    server = Server(("127.0.0.1", 0), Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    cmd = [args.engage, "import", args.file, "--endpoint", f"http://127.0.0.1:{port}",
           "--token", "t", "--quiet", "--report", "json"]
    start = time.time()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    elapsed = time.time() - start
    server.shutdown()
    report = json.loads(out) if out.strip() else {}
    print(json.dumps({
        "input_bytes": os.path.getsize(args.file),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "exit_status": os.waitstatus_to_exitcode(status),
        "elapsed_s": round(elapsed, 1),
        "sink_requests": Sink.requests,
        "report": report,
    }, indent=2))


if __name__ == "__main__":
    main()
