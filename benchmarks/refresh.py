"""``refresh``: rotation throughput and memory against an Alipay that answers in 100 ms.

The local stack (DynamoDB Local and moto, ``sandbox.aws_standins.LocalAws``, provisioned by
``sandbox.stack.provision``) and the emulator (``sandbox.emulator.Emulator``) with
``Fault.LATENCY`` of 100 ms on every call. Tokens come from ``sandbox.seed.seed_tokens``, due now.

- Candidate: the refresher as its own process (``benchmarks.refresh_child``, built as
  ``sandbox.run_refresher`` builds it), ``RefreshService.run`` at concurrency 16. Its throughput is
  refreshed tokens over the run's own time (process start-up and the first secret fetch excluded).
  Target: at least 80% of the concurrency-bound ideal, 16 calls in flight / 0.1 s = 160 tokens/s.
  Runs of 1,000 due are made three times and the median run is judged (the others are reported).
- Baseline, in the same run, before and after the first candidate run: what a cron script around an
  SDK does, one token after another: read the item, open the pair, ``TokenApi.refresh``, store the
  new pair (``Store.save_authorization``). Target: the candidate at least 10x its rate.
- Memory: the candidate's peak RSS during a run when 1,000 and when 10,000 tokens are due (each a
  complete run); it should stay flat (target: the larger at most 1.1x the smaller).

The rate limiter's default (``RefreshPolicy.max_calls_per_second`` = 20, Alipay's QPS budget)
would cap a run at 20 tokens/s, an eighth of the ideal: the candidate runs with
``REFRESH_MAX_CALLS_PER_SECOND`` raised so that the limiter is not what is measured. CPU time of
every process is recorded (the refresher's during its run, this process serving the emulator,
DynamoDB Local, moto) to tell a concurrency limit from a machine limit: everything runs on this
machine's CPUs.

The stand-ins are spared work that is theirs, not the product's, and that would otherwise be
counted against the refresher on these shared CPUs: the emulator and the front send with Nagle
off (``disable_nagle_algorithm``: their headers and body are two writes, and the body waited
40 ms for the client's delayed ACK), and moto no longer lists its package directory on every
request (``sandbox.aws_standins._spare_moto_per_request_work``).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

from alipay_v3 import AlipayClient, AlipayConfig, TokenApi
from app_auth.container import Container, build_container
from app_auth.refresh import REFRESHED, RefreshPolicy
from benchmarks.harness import REPO_ROOT, machine_info
from benchmarks.refresh_child import EXCHANGE
from sandbox.aws_standins import LocalAws
from sandbox.credentials import DevCredentials
from sandbox.emulator import Emulator, Fault
from sandbox.seed import merchant_app_ids, seed_tokens
from sandbox.stack import provision

NAME = "refresh"
LATENCY_SECONDS = 0.1
CONCURRENCY = 16
IDEAL_PER_SECOND = CONCURRENCY / LATENCY_SECONDS
TARGET_SHARE_OF_IDEAL = 0.8
TARGET_SPEEDUP = 10.0
TARGET_MEMORY_RATIO = 1.1
RATE_LIMIT_FOR_BENCHMARK = 1000.0  # calls/s; the default is RefreshPolicy().max_calls_per_second
CHILD_TIMEOUT_SECONDS = 420.0
SMALL_RUNS = 3
FAR_FUTURE = 10 * 365 * 86400.0
PACKAGES = ("boto3", "botocore", "requests", "cryptography", "moto")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a running process (and its reaped children), from /proc."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / os.sysconf("SC_CLK_TCK")


class _Bench:
    def __init__(self, aws: LocalAws, emulator: Emulator, creds: DevCredentials) -> None:
        self.aws, self.emulator, self.creds = aws, emulator, creds
        provisioned = provision(
            aws, creds.client_config(emulator.base_url), callback_url="http://127.0.0.1:9/cb"
        )
        self.env = provisioned.env
        self.container: Container = build_container(provisioned.settings, client=aws.client)
        self.token_api = TokenApi(
            AlipayClient(AlipayConfig.from_mapping(creds.client_config(emulator.base_url)))
        )
        self.seeded = 0

    def seed(self, count: int, *, due_at: float) -> tuple[list[str], float]:
        apps = merchant_app_ids(count, start=self.seeded, prefix="2097")
        self.seeded += count
        started = time.monotonic()
        seed_tokens(self.emulator.authority, self.container.store, self.creds.app_id, apps, due_at=due_at)
        return apps, time.monotonic() - started

    # -- the baseline: one after another, in this process ---------------------------------------

    def sequential(self, apps: Sequence[str]) -> dict[str, Any]:
        store = self.container.store
        per_token = []
        started = time.monotonic()
        for app in apps:
            began = time.perf_counter()
            record = store.get_token(app)
            pair = store.open_current(record)
            token = self.token_api.refresh(pair.app_refresh_token).primary
            store.save_authorization(token, isv_app_id=self.creds.app_id)
            per_token.append(time.perf_counter() - began)
        seconds = time.monotonic() - started
        return {
            "tokens": len(apps),
            "seconds": round(seconds, 3),
            "per_second": round(len(apps) / seconds, 2),
            "median_ms_per_token": round(statistics.median(per_token) * 1000, 1),
        }

    # -- the candidate: the refresher as its own process ----------------------------------------

    def refresher_run(self, due: int) -> dict[str, Any]:
        env = self.aws.process_env()
        env.update(self.env)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "layers" / "alipay_auth")])
        env["REFRESH_CONCURRENCY"] = str(CONCURRENCY)
        env["REFRESH_MAX_CALLS_PER_SECOND"] = str(RATE_LIMIT_FOR_BENCHMARK)
        stand_ins = {name: pid for name, pid in zip(("dynamodb", "moto"), self.aws.pids, strict=True)}
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            cpu_before = {name: _cpu_seconds(pid) for name, pid in stand_ins.items()}
            own_before = os.times()
            started = time.monotonic()
            process = subprocess.Popen(
                [sys.executable, "-m", "benchmarks.refresh_child"],
                cwd=REPO_ROOT,
                env=env,
                stdout=out,
                stderr=err,
            )
            watchdog = threading.Timer(CHILD_TIMEOUT_SECONDS, process.kill)
            watchdog.start()
            try:
                # wait4, not wait: the child's own rusage (CPU), not the sum over every child so far.
                _, status, usage = os.wait4(process.pid, 0)
            finally:
                watchdog.cancel()
            process.returncode = os.waitstatus_to_exitcode(status)
            wall = time.monotonic() - started
            own_after = os.times()
            cpu = {name: round(_cpu_seconds(pid) - cpu_before[name], 2) for name, pid in stand_ins.items()}
            out.seek(0)
            err.seek(0)
            lines = out.read().splitlines()
            if process.returncode != 0 or not lines:
                raise RuntimeError(f"refresher exited with {process.returncode}: {err.read()[-800:]}")
        report = json.loads(lines[-1])
        summary = report["summary"]
        refreshed = summary["outcomes"].get(REFRESHED, 0)
        # The run's own CPU: start-up (imports, the first secret fetch) is not per-token work.
        cpu["refresher"] = round(report["run_cpu_seconds"], 2)
        cpu_refresher_process = round(usage.ru_utime + usage.ru_stime, 2)
        cpu["emulator_and_benchmark"] = round(
            (own_after.user + own_after.system) - (own_before.user + own_before.system), 2
        )
        total_cpu = sum(cpu.values())
        cpus = os.cpu_count() or 1
        return {
            "due": due,
            "outcomes": summary["outcomes"],
            "all_refreshed": refreshed == due and summary["due"] == due,
            "run_seconds": round(report["run_seconds"], 3),
            "process_seconds": round(wall, 3),
            "per_second": round(refreshed / report["run_seconds"], 2),
            "share_of_ideal": round(refreshed / report["run_seconds"] / IDEAL_PER_SECOND, 3),
            # With the reset, VmHWM after the run is the run's own peak (start-up's is reported apart).
            "peak_rss_mib": round(max(report["peak_rss_kib"], report["rss_after_startup_kib"]) / 1024, 1),
            "peak_rss_startup_mib": round(report["peak_rss_startup_kib"] / 1024, 1),
            "peak_reset_after_startup": report["peak_reset_after_startup"],
            "rss_mib_after_startup_and_after_run": [
                round(report["rss_after_startup_kib"] / 1024, 1),
                round(report["rss_after_run_kib"] / 1024, 1),
            ],
            "run_rss_growth_mib": round((report["peak_rss_kib"] - report["rss_after_startup_kib"]) / 1024, 1),
            "mean_ms_per_call_by_step": {
                step: round(seconds / report["step_calls"][step] * 1000, 1)
                for step, seconds in report["step_seconds"].items()
            },
            "aws_calls": report["aws_calls"],
            "aws_calls_per_token": round(sum(report["aws_calls"].values()) / max(refreshed, 1), 2),
            "cpu_seconds": cpu,
            "cpu_seconds_refresher_process_with_startup": cpu_refresher_process,
            "cpu_ms_per_token": {
                name: round(seconds / max(refreshed, 1) * 1000, 2) for name, seconds in cpu.items()
            },
            "cpu_busy_share_of_machine": round(total_cpu / (report["run_seconds"] * cpus), 3),
            "cpu_bound_ceiling_per_second": round(cpus / (total_cpu / max(refreshed, 1)), 1),
        }


def run(quick: bool = False) -> dict[str, Any]:
    # A run of 1,000 lasts seconds and this machine's speed drifts by tens of per cent within
    # minutes: that size is run three times and judged by its median run.
    sizes = [100, 1000] if quick else [1000] * SMALL_RUNS + [10000]
    baseline_half = 8 if quick else 40
    load_before = os.getloadavg()[0]
    creds = DevCredentials.generate()
    phases: list[str] = []
    with LocalAws() as aws, Emulator() as emulator:
        emulator.register_app(creds)
        bench = _Bench(aws, emulator, creds)
        # Not due, so that the candidate's runs leave them alone; one extra to warm the connection up.
        baseline_apps, _ = bench.seed(2 * baseline_half + 1, due_at=time.time() + FAR_FUTURE)
        emulator.inject(Fault.LATENCY, rate=1.0, delay=LATENCY_SECONDS)  # every call, until the end
        bench.sequential(baseline_apps[:1])

        baseline = [bench.sequential(baseline_apps[1 : 1 + baseline_half])]
        phases.append(f"baseline {baseline_half} tokens")
        runs = []
        seeding: dict[int, list[float]] = {}
        for index, size in enumerate(sizes):
            apps, seconds = bench.seed(size, due_at=1.0)
            seeding.setdefault(size, []).append(round(seconds, 1))
            phases.append(f"seed {size}")
            runs.append(bench.refresher_run(size))
            runs[-1]["emulator_refreshes_of_first_app"] = emulator.refresh_count(apps[0])
            phases.append(f"refresher run, {size} due")
            if index == 0:
                baseline.append(bench.sequential(baseline_apps[1 + baseline_half :]))
                phases.append(f"baseline {baseline_half} tokens")

    baseline_rate = sum(part["tokens"] for part in baseline) / sum(part["seconds"] for part in baseline)
    small, second = runs[:-1], runs[-1]
    first = sorted(small, key=lambda run: run["per_second"])[len(small) // 2]  # the median run
    share = first["share_of_ideal"]
    speedup = first["per_second"] / baseline_rate
    memory_ratio = second["peak_rss_mib"] / first["peak_rss_mib"]
    growth_ratio = second["run_rss_growth_mib"] / max(first["run_rss_growth_mib"], 0.1)
    checks_passed = all(run["all_refreshed"] for run in runs)
    result: dict[str, Any] = {
        "benchmark": NAME,
        "what": "refresher throughput at concurrency 16 against a 100 ms Alipay, vs the ideal and vs "
        "a sequential cron loop; peak memory as the due set grows",
        "machine": {**machine_info(PACKAGES), "load_average_1m_before": round(load_before, 2)},
        "method": {
            "latency_seconds": LATENCY_SECONDS,
            "concurrency": CONCURRENCY,
            "ideal_per_second": IDEAL_PER_SECOND,
            "rate_limit": f"REFRESH_MAX_CALLS_PER_SECOND={RATE_LIMIT_FOR_BENCHMARK:g} for the candidate: the "
            f"default max_calls_per_second={RefreshPolicy().max_calls_per_second:g} would cap it at that rate",
            "phases_in_order": phases,
            "candidate": "benchmarks.refresh_child: sandbox.run_refresher.build_refresher, then one "
            "RefreshService.run; rate = refreshed / run time (start-up excluded)",
            "baseline": "in this process, one token after another: get_token, open_current, "
            "TokenApi.refresh, save_authorization (no lease, no events: less work than the candidate)",
            "memory": "the refresher process's peak RSS during the run (VmHWM, reset through "
            "/proc/self/clear_refs once start-up is done) and its resident size (VmRSS) after start-up "
            "and after the run; ru_maxrss is not used: Linux carries it across fork and exec, so a child's "
            "starts at this (parent) process's size, which grows with the seeding",
            "steps": "mean wall time per call of each step of refresh_one, timed inside the refresher "
            "(calls overlap: 16 threads); their sum against the 100 ms call shows where the ideal is lost",
            "stand_ins": "DynamoDB Local, moto and the emulator share this machine's CPUs with the refresher",
            "seeding_seconds": seeding,
        },
        "targets": {
            "min_share_of_ideal": TARGET_SHARE_OF_IDEAL,
            "min_speedup_over_sequential": TARGET_SPEEDUP,
            "max_peak_rss_ratio": TARGET_MEMORY_RATIO,
        },
        "passed": share >= TARGET_SHARE_OF_IDEAL
        and speedup >= TARGET_SPEEDUP
        and memory_ratio <= TARGET_MEMORY_RATIO
        and checks_passed,
        "baseline": {"parts": baseline, "per_second": round(baseline_rate, 2)},
        "runs": runs,
        "judged_run": runs.index(first),
        "per_second_of_each_run": [run["per_second"] for run in runs],
        "speedup_over_sequential": round(speedup, 2),
        "peak_rss_ratio": round(memory_ratio, 3),
        "run_rss_growth_ratio": round(growth_ratio, 2),
    }
    notes = [
        "The rate limiter's default, 20 calls/s, is below the 160/s this benchmark asks for: it was "
        f"raised to {RATE_LIMIT_FOR_BENCHMARK:g} for the candidate (REFRESH_MAX_CALLS_PER_SECOND). With the "
        "default, a run refreshes at most 20 tokens/s, which is the intended ceiling in production.",
    ]
    if share < TARGET_SHARE_OF_IDEAL:
        notes.append(
            f"Below {TARGET_SHARE_OF_IDEAL:.0%} of the ideal: the whole machine spent "
            f"{sum(first['cpu_ms_per_token'].values()):.1f} ms of CPU per refreshed token "
            f"({', '.join(f'{k} {v:g}' for k, v in first['cpu_ms_per_token'].items())} ms), so "
            f"{os.cpu_count()} CPUs can do at most ~{first['cpu_bound_ceiling_per_second']:g} tokens/s "
            f"here whatever the concurrency; the CPUs were {first['cpu_busy_share_of_machine']:.0%} busy "
            "with this benchmark's processes during the run (other load not counted). Each exchange "
            f"held its slot {first['mean_ms_per_call_by_step'][EXCHANGE]:g} ms against the 100 ms "
            "injected (the rest is waiting for a CPU), and at concurrency 16 the rate is at most 16 / that "
            f"time; the rest of refresh_one ({first['mean_ms_per_call_by_step']['whole refresh_one']:g} ms "
            "in all) overlaps in the other workers."
        )
    result["notes"] = notes
    result["summary"] = [
        {
            "measure": f"refresher {first['due']} due / ideal {IDEAL_PER_SECOND:g}/s",
            "value": f"{share:.0%}",
            "detail": f"{first['per_second']:.0f}/s, median of "
            f"{'/'.join(f'{run["per_second"]:.0f}' for run in small)}; {second['due']} due: "
            f"{second['per_second']:.0f}/s; CPU-bound ceiling here ~{first['cpu_bound_ceiling_per_second']:.0f}/s",
            "target": f">= {TARGET_SHARE_OF_IDEAL:.0%}",
            "passed": share >= TARGET_SHARE_OF_IDEAL,
        },
        {
            "measure": "refresher / sequential loop",
            "value": f"{speedup:.1f}x",
            "detail": f"{first['per_second']:.0f} vs {baseline_rate:.1f} tokens/s; {second['due']} due: "
            f"{second['per_second'] / baseline_rate:.1f}x",
            "target": f">= {TARGET_SPEEDUP:g}x",
            "passed": speedup >= TARGET_SPEEDUP,
        },
        {
            "measure": f"peak RSS {second['due']} / {first['due']} due",
            "value": f"{memory_ratio:.2f}x",
            "detail": f"{second['peak_rss_mib']:.1f} vs {first['peak_rss_mib']:.1f} MiB; above start-up "
            f"{second['run_rss_growth_mib']:.1f} vs {first['run_rss_growth_mib']:.1f} MiB",
            "target": f"<= {TARGET_MEMORY_RATIO:g}x",
            "passed": memory_ratio <= TARGET_MEMORY_RATIO,
        },
        {
            "measure": "every due token refreshed",
            "value": "yes" if checks_passed else "NO",
            "detail": ", ".join(f"{run['due']}: {run['outcomes']}" for run in runs),
            "target": "all",
            "passed": checks_passed,
        },
    ]
    return result
