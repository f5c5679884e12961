#!/usr/bin/env python3
"""What the crash-safe journal costs: `engage import` of the same file into a fresh
`engage serve` (emulator) process, with and without `--journal`, alternating, several
runs. Prints wall and CPU seconds (user+sys of the `engage import` process only; the
emulator runs in its own process) and the median ratios.

    cargo build --release -p engage-cli
    python3 benches/journal.py [--runs 5] [--records 200000] [--latency-ms 0] [--idempotent]
"""

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wan  # noqa: E402  (the same generator, emulator and runner as the WAN figures)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--latency-ms", type=int, default=0)
    ap.add_argument("--idempotent", action="store_true",
                    help="drop the $add/$append updates (batches the journal need not sync)")
    args = ap.parse_args()
    path = os.path.join(tempfile.gettempdir(), f"engage-journal-{args.records}.ndjson")
    if not os.path.exists(path):
        wan.generate(path, args.records, args.records // 2, unique=False)
    if args.idempotent:
        kept = path.replace(".ndjson", "-idempotent.ndjson")
        if not os.path.exists(kept):
            with open(path, encoding="utf-8") as src, open(kept, "w", encoding="utf-8") as dst:
                dst.writelines(l for l in src if '"$add"' not in l and '"$append"' not in l)
        path = kept
    with open(path, "rb") as f:
        records = sum(1 for _ in f)
    size_mb = os.path.getsize(path) / 1e6
    print(f"{records} updates ({size_mb:.0f} MB), {args.runs} runs each, "
          f"emulator latency {args.latency_ms} ms")
    results = {"without": [], "with": []}
    for i in range(args.runs):
        for label in ("without", "with"):
            flags = []
            journal = None
            if label == "with":
                journal = os.path.join(tempfile.gettempdir(), f"engage-journal-run-{os.getpid()}")
                if os.path.exists(journal):
                    os.remove(journal)
                flags = ["--journal", journal]
            wall, cpu, report, stats, _ = wan.imported(wan.ENGAGE, path, args.latency_ms, *flags)
            if journal and os.path.exists(journal):
                os.remove(journal)
            assert report.get("accepted") == records, report
            results[label].append((wall, cpu))
            print(f"  run {i + 1} {label:<8} journal: wall {wall:6.2f} s  CPU {cpu:5.2f} s")
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
           for k, v in results.items()}
    print(f"median without: wall {med['without'][0]:.2f} s, CPU {med['without'][1]:.2f} s")
    print(f"median with:    wall {med['with'][0]:.2f} s, CPU {med['with'][1]:.2f} s")
    print(f"journal cost: CPU x{med['with'][1] / med['without'][1]:.3f}, "
          f"wall x{med['with'][0] / med['without'][0]:.3f}")


if __name__ == "__main__":
    main()
