#!/usr/bin/env python3
"""CPU seconds per path for one generated NDJSON file (issue #10's figures), in one run:

  1. `engage import --dry-run` (validate and batch, no sending): the whole process;
  2. `engage import` into an `engage-emulator` process: the client process, and the
     emulator's CPU over the import (from /proc/PID/stat before and after);
  3. a Python `json.loads` + `json.dumps` loop over the same lines (a baseline anyone can
     run), in this process;

and the ratios of the Python loop to each. User+sys CPU, not wall time: the machines are
shared.

    cargo build --release -p engage-cli -p engage-emulator
    python3 benches/cpu.py [--records 500000] [--runs 3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wan  # noqa: E402  (the same realistic generator as the WAN figures)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGAGE = os.path.join(ROOT, "target", "release", "engage")
EMULATOR = os.path.join(ROOT, "target", "release", "engage-emulator")
TOKEN = "cpu-token"


def proc_cpu(pid):
    """User+sys seconds of a running process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def engage(path, *flags):
    """Runs `engage import` to the end; returns (wall s, report)."""
    started = time.monotonic()
    proc = subprocess.Popen([ENGAGE, "import", path, "--token", TOKEN, "--quiet",
                             "--report", "json", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    wall = time.monotonic() - started
    report = json.loads(out) if out.strip().startswith("{") else {"error": err[-300:]}
    return wall, report


def children_cpu():
    usage = os.times()
    return usage.children_user + usage.children_system


def python_loop(path):
    start = time.process_time()
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            json.dumps(json.loads(line), ensure_ascii=False)
            n += 1
    return time.process_time() - start, n


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    for binary in (ENGAGE, EMULATOR):
        if not os.path.exists(binary):
            sys.exit("build first: cargo build --release -p engage-cli -p engage-emulator")
    path = os.path.join(tempfile.gettempdir(), f"engage-cpu-{args.records}.ndjson")
    wan.generate(path, args.records, max(1, args.records * 43 // 100), unique=False)
    size = os.path.getsize(path) / 1e6
    print(f"{args.records} updates, {size:.0f} MB, {args.runs} runs each (median)")

    dry, client, emulator, python = [], [], [], []
    for _ in range(args.runs):
        before = children_cpu()
        _, report = engage(path, "--dry-run")
        dry.append(children_cpu() - before)
        assert report.get("records") == args.records, report

        server = subprocess.Popen([EMULATOR, "--token", TOKEN], stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True)
        try:
            url = server.stdout.readline().strip().removeprefix("listening on ")
            server_before = proc_cpu(server.pid)
            before = children_cpu()
            _, report = engage(path, "--endpoint", url)
            client.append(children_cpu() - before)
            emulator.append(proc_cpu(server.pid) - server_before)
            assert report.get("accepted") == args.records, report
        finally:
            server.terminate()
            server.wait()

        seconds, n = python_loop(path)
        assert n == args.records
        python.append(seconds)

    rows = [("engage import --dry-run", dry), ("engage import (client)", client),
            ("engage-emulator for that import", emulator),
            ("Python json.loads + json.dumps per line", python)]
    py = statistics.median(python)
    for label, values in rows:
        med = statistics.median(values)
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {label:<42} CPU {med:6.2f} s  ({size / med:6.1f} MB/s per core)"
              f"  Python / this {py / med:5.1f}x   runs: {runs}")


if __name__ == "__main__":
    main()
