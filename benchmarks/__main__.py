"""``python -m benchmarks [--quick] [name ...]``: run the benchmarks (all by default), write
``benchmarks/results/<name>.json`` and print a summary table.

A missed target is reported, not an error: the exit status is non-zero only when a benchmark
could not run at all.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from typing import Any

from benchmarks.harness import write_result

BENCHMARKS = {
    "protocol": "benchmarks.protocol",  # one token exchange without the network vs the crypto floor
    "sdk": "benchmarks.sdk",  # our sign + verify vs the official Python SDK's
    "coldstart": "benchmarks.coldstart",  # a function's fresh process vs importing its libraries
    "refresh": "benchmarks.refresh",  # rotation throughput at 100 ms latency, memory as the due set grows
}


def _table(rows: list[dict[str, Any]]) -> str:
    header = ("benchmark", "measure", "value", "target", "", "detail")
    lines = [
        (
            row["benchmark"],
            row["measure"],
            row["value"],
            row["target"],
            {True: "PASS", False: "FAIL", None: "n/a"}[row["passed"]],
            row["detail"],
        )
        for row in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *lines]) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *lines]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "names", nargs="*", choices=[[], *BENCHMARKS], metavar="name", help=", ".join(BENCHMARKS)
    )
    parser.add_argument(
        "--quick", action="store_true", help="few iterations: checks that they run, numbers are rough"
    )
    args = parser.parse_args(argv)
    names = args.names or list(BENCHMARKS)

    rows: list[dict[str, Any]] = []
    crashed = []
    for name in names:
        started = time.monotonic()
        print(f"== {name}", flush=True)
        try:
            result = importlib.import_module(BENCHMARKS[name]).run(quick=args.quick)
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others' numbers
            traceback.print_exc()
            crashed.append(name)
            rows.append(
                {
                    "benchmark": name,
                    "measure": "(crashed)",
                    "value": "-",
                    "target": "-",
                    "passed": None,
                    "detail": "",
                }
            )
            continue
        result["quick"] = args.quick
        result["seconds"] = round(time.monotonic() - started, 1)
        path = write_result(name, result)
        print(f"   {result['seconds']} s -> {path.relative_to(path.parent.parent.parent)}", flush=True)
        rows += [{"benchmark": name, **row} for row in result["summary"]]

    print()
    print(_table(rows))
    if crashed:
        print(f"\ncould not run: {', '.join(crashed)}", file=sys.stderr)
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
