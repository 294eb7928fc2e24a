"""What every benchmark shares: interleaved timing, medians and spread, machine facts, result files,
and the line protocol that drives a benchmark worker in another virtualenv.

Standard library only: this module also runs inside ``.venv-bench-sdk``.
"""

from __future__ import annotations

import json
import os
import platform
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import IO, Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO_ROOT = Path(__file__).resolve().parent.parent

Op = Callable[[], object]
# samples[name][round] = nanoseconds of each call in that round's block
Samples = dict[str, list[list[int]]]


def measure_interleaved(
    ops: Mapping[str, Op], *, rounds: int, iterations: int, warmup: int = 10, first_round: int = 0
) -> Samples:
    """Time each call of each op, the ops taking turns in blocks (A B C A B C ...).

    Each round runs every op ``iterations`` times; the op that starts a round rotates, so no op
    always follows the same neighbour. The garbage collector stays on: it is part of a real call.
    """
    for op in ops.values():
        for _ in range(warmup):
            op()
    names = list(ops)
    samples: Samples = {name: [] for name in names}
    clock = time.perf_counter_ns
    for round_index in range(first_round, first_round + rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            op = ops[name]
            block = []
            for _ in range(iterations):
                started = clock()
                op()
                block.append(clock() - started)
            samples[name].append(block)
    return samples


def _percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    position = (len(sorted_values) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def summarize(rounds_ns: list[list[int]]) -> dict[str, Any]:
    """Median, p90 and spread of one op, in microseconds."""
    flat = sorted(ns / 1000 for block in rounds_ns for ns in block)
    round_medians = [statistics.median(block) / 1000 for block in rounds_ns]
    return {
        "calls": len(flat),
        "rounds": len(rounds_ns),
        "median_us": round(statistics.median(flat), 2),
        "p90_us": round(_percentile(flat, 0.9), 2),
        "min_us": round(flat[0], 2),
        "round_medians_us": {"min": round(min(round_medians), 2), "max": round(max(round_medians), 2)},
    }


def ratio(numerator: list[list[int]], denominator: list[list[int]]) -> dict[str, Any]:
    """Ratio of medians over all calls, and its spread: the same ratio taken round by round."""
    overall = statistics.median(ns for block in numerator for ns in block) / statistics.median(
        ns for block in denominator for ns in block
    )
    per_round = sorted(
        statistics.median(a) / statistics.median(b) for a, b in zip(numerator, denominator, strict=True)
    )
    return {
        "ratio_of_medians": round(overall, 3),
        "per_round": {
            "min": round(per_round[0], 3),
            "p25": round(_percentile(per_round, 0.25), 3),
            "median": round(statistics.median(per_round), 3),
            "p75": round(_percentile(per_round, 0.75), 3),
            "max": round(per_round[-1], 3),
        },
    }


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def machine_info(packages: Sequence[str] = ()) -> dict[str, Any]:
    """Facts that change the numbers: interpreter, CPU, load, and library versions."""
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "packages": versions,
    }
    try:
        from cryptography.hazmat.backends.openssl.backend import backend

        info["openssl"] = backend.openssl_version_text()
    except ImportError:
        pass
    return info


def write_result(name: str, result: Mapping[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    partial = path.with_name(path.name + ".tmp")  # ignored by git; replaced atomically
    partial.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path


def brief_error(exc: BaseException) -> str:
    """The type and the start of the message: enough to say why, short enough for a report.

    Only throw-away benchmark credentials ever reach these messages.
    """
    return f"{type(exc).__name__}: {str(exc)[:200]}"


# --- the worker protocol: one JSON object per line each way -----------------------------------
#
# parent -> worker: the setup object; then {"cmd": "round", "iterations": n, "round": i} ...; {"cmd": "exit"}
# worker -> parent: {"ready": true, "machine": ..., "ops": [...], "notes": {...}} or {"ready": false,
#                   "error": "..."}; then {"samples": {op: [ns, ...]}} for each round


def serve_worker(
    setup: Callable[[dict[str, Any]], tuple[dict[str, Op], dict[str, Any]]], packages: Sequence[str]
) -> None:
    """The worker's side. Library output cannot corrupt the channel: stdout is moved to stderr."""
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    sys.stdout = sys.stderr

    def send(message: Mapping[str, Any]) -> None:
        channel.write(json.dumps(message) + "\n")
        channel.flush()

    try:
        ops, notes = setup(json.loads(sys.stdin.readline()))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which records why
        send({"ready": False, "error": brief_error(exc)})
        return
    send({"ready": True, "machine": machine_info(packages), "ops": list(ops), "notes": notes})
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] != "round":
            break
        samples = measure_interleaved(
            ops, rounds=1, iterations=command["iterations"], warmup=3, first_round=command["round"]
        )
        send({"samples": {name: blocks[0] for name, blocks in samples.items()}})


class WorkerError(RuntimeError):
    pass


class Worker:
    """The parent's side: a worker process in some virtualenv, driven one round at a time."""

    def __init__(self, python: str | Path, module: str, setup: Mapping[str, Any], *, timeout: float) -> None:
        self.timeout = timeout
        self._stderr: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 - closed in close()
        self._process = subprocess.Popen(
            [str(python), "-m", module],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            encoding="utf-8",
        )
        self._send(setup)
        hello = self._receive()
        if not hello.get("ready"):
            self.close()
            raise WorkerError(str(hello.get("error")))
        self.machine: dict[str, Any] = hello["machine"]
        self.ops: list[str] = hello["ops"]
        self.notes: dict[str, Any] = hello["notes"]

    def _send(self, message: Mapping[str, Any]) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(message) + "\n")
        self._process.stdin.flush()

    def _receive(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        ready, _, _ = select.select([self._process.stdout], [], [], self.timeout)
        line = self._process.stdout.readline() if ready else ""
        if not line:
            self._process.kill()
            self._process.wait()
            self._stderr.seek(0)
            tail = self._stderr.read()[-600:].strip()
            why = "timed out" if not ready else f"exited with {self._process.returncode}"
            raise WorkerError(f"worker {why}: {tail or 'no output on stderr'}")
        message: dict[str, Any] = json.loads(line)
        return message

    def run_round(self, iterations: int, round_index: int) -> dict[str, list[int]]:
        self._send({"cmd": "round", "iterations": iterations, "round": round_index})
        samples: dict[str, list[int]] = self._receive()["samples"]
        return samples

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                self._send({"cmd": "exit"})
                self._process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()
        self._stderr.close()
