"""``coldstart``: a function's cold start as a fresh process, against the floor of importing the
libraries it cannot do without.

For each function (functions/callback, functions/refresher), a fresh ``python`` with the function's
directory as working directory and the layer on PYTHONPATH (Lambda's layout) imports the handler
module and builds its container from the environment (``build_container(Settings.from_env())``,
what the first ``get_container()`` does; it makes no boto3 client, each is made when first used).
The environment is a real one: the local stack (``sandbox.aws_standins.LocalAws``) provisioned by
``sandbox.stack.provision``.
The floor is a fresh process importing boto3, requests and the cryptography primitives the
protocol uses. All variants take turns, N fresh processes each. Measured: the process's wall time
from spawn to exit (interpreter start-up included, as in Lambda's init), and inside it the import
and build phases. Target: a function at most 1.3x the floor (wall time).

What lazy loading bought: an ``eager`` variant of each function also does, at start-up, what the
container defers to first use (a callback's four boto3 clients, the Alipay configuration from
Secrets Manager with its key parsing, the Alipay client, the state signer's secret); a reference
variant measures the first boto3 client with botocore's own loader and with ours; and
``-X importtime`` lists the modules the functions import beyond the floor, with their cost, and
the layer modules they do not import at all.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks.harness import REPO_ROOT, machine_info
from sandbox.aws_standins import LocalAws
from sandbox.credentials import DevCredentials
from sandbox.stack import provision

NAME = "coldstart"
TARGET_RATIO = 1.3
FUNCTIONS = ("callback", "refresher")
LAYER = REPO_ROOT / "layers" / "alipay_auth"
CHILD = "benchmarks.coldstart_child"
PACKAGES = ("boto3", "botocore", "requests", "cryptography", "aws-lambda-powertools")
# Where the floor's imports end: the roots of what every function needs anyway.
FLOOR_ROOTS = (
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "dateutil",
    "urllib3",
    "requests",
    "cryptography",
)


def _command(variant: str, function: str | None, importtime: bool = False) -> tuple[list[str], Path]:
    flags = ["-X", "importtime"] if importtime else []
    cwd = REPO_ROOT / "functions" / function if function else REPO_ROOT
    return [sys.executable, *flags, "-m", CHILD, variant], cwd


def _spawn(variant: str, function: str | None, env: Mapping[str, str]) -> dict[str, Any]:
    command, cwd = _command(variant, function)
    started = time.perf_counter_ns()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)
    wall_ms = (time.perf_counter_ns() - started) / 1e6
    if done.returncode != 0:
        raise RuntimeError(f"{variant} {function or ''} exited with {done.returncode}: {done.stderr[-800:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    report["wall_ms"] = wall_ms
    return report


def _importtime(variant: str, function: str | None, env: Mapping[str, str]) -> dict[str, tuple[int, int]]:
    """module -> (self us, cumulative us), from one ``-X importtime`` run."""
    command, cwd = _command(variant, function, importtime=True)
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=True)
    modules: dict[str, tuple[int, int]] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "[us]" in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
        modules[name.strip()] = (int(self_us), int(cumulative_us))
    return modules


def _root(module: str) -> str:
    return module.split(".", 1)[0]


def _beyond_floor(
    function_modules: dict[str, tuple[int, int]], floor: dict[str, tuple[int, int]]
) -> dict[str, Any]:
    """The modules a function imports that the floor does not, summed by top-level package."""
    extra = {name: cost for name, cost in function_modules.items() if name not in floor}
    by_root: dict[str, float] = {}
    for name, (self_us, _) in extra.items():
        by_root[_root(name)] = by_root.get(_root(name), 0) + self_us
    stdlib = set(sys.stdlib_module_names)
    grouped: dict[str, float] = {}
    for root, us in by_root.items():
        group = "stdlib" if root in stdlib else root
        grouped[group] = grouped.get(group, 0) + us
    top_cumulative = sorted(
        (
            (cumulative, name)
            for name, (_, cumulative) in extra.items()
            if "." not in name
            or _root(name) in ("aws_lambda_powertools", "alipay_v3", "app_auth", "cryptography")
        ),
        reverse=True,
    )[:15]
    return {
        "modules": len(extra),
        "self_ms_total": round(sum(us for us, _ in extra.values()) / 1000, 1),
        "self_ms_by_package": {
            name: round(us / 1000, 1) for name, us in sorted(grouped.items(), key=lambda kv: -kv[1])[:12]
        },
        "heaviest_cumulative_ms": {name: round(us / 1000, 1) for us, name in top_cumulative},
    }


def _layer_modules() -> list[str]:
    return sorted(
        f"{path.parent.name}.{path.stem}" if path.stem != "__init__" else path.parent.name
        for path in LAYER.glob("*/*.py")
    )


def _not_imported_cost(missing: list[str], function: str, env: Mapping[str, str]) -> dict[str, float]:
    """Import cost of layer modules a function does not import, measured on top of the function."""
    if not missing:
        return {}
    code = "import app\n" + "".join(f"import {name}\n" for name in missing)
    command = [sys.executable, "-X", "importtime", "-c", code]
    done = subprocess.run(
        command,
        cwd=REPO_ROOT / "functions" / function,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    cost: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if line.startswith("import time:") and "[us]" not in line:
            _, cumulative_us, name = line.removeprefix("import time:").split("|")
            if name.strip() in missing:
                cost[name.strip()] = round(int(cumulative_us) / 1000, 1)
    return cost


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 1),
        "min": round(ordered[0], 1),
        "max": round(ordered[-1], 1),
    }


def run(quick: bool = False) -> dict[str, Any]:
    processes = 5 if quick else 20
    creds = DevCredentials.generate()
    variants: list[tuple[str, str, str | None]] = [
        ("floor", "floor", None),
        ("floor+client", "floor_client", None),
        ("floor+client.named", "floor_client_named", None),
    ]
    for function in FUNCTIONS:
        variants += [(function, "function", function), (f"{function}.eager", "eager", function)]

    samples: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in variants}
    with LocalAws() as aws:
        provisioned = provision(
            aws, creds.client_config("http://127.0.0.1:9"), callback_url="http://127.0.0.1:9/cb"
        )
        env = aws.process_env()
        env.update(provisioned.env)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(LAYER)])
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        for _, variant, function in variants:  # bytecode caches written, disk caches warm
            _spawn(variant, function, env)
        for index in range(processes):
            shift = index % len(variants)
            for name, variant, function in variants[shift:] + variants[:shift]:
                samples[name].append(_spawn(variant, function, env))

        floor_modules = _importtime("floor", None, env)
        importtime: dict[str, Any] = {}
        for function in FUNCTIONS:
            modules = _importtime("function", function, env)
            layer = _layer_modules()
            missing = [name for name in layer if name not in modules]
            importtime[function] = {
                "beyond_floor": _beyond_floor(modules, floor_modules),
                "layer_modules_not_imported_ms": _not_imported_cost(missing, function, env),
            }

    wall = {name: _stats([s["wall_ms"] for s in runs]) for name, runs in samples.items()}
    floor_wall = wall["floor"]["median"]
    floor_import = statistics.median(s["import_ms"] for s in samples["floor"])
    functions: dict[str, Any] = {}
    for function in FUNCTIONS:
        runs, eager = samples[function], samples[f"{function}.eager"]
        import_ms = statistics.median(s["import_ms"] for s in runs)
        build_ms = statistics.median(s["build_ms"] for s in runs)
        eager_wall = wall[f"{function}.eager"]["median"]
        functions[function] = {
            "wall_ms": wall[function],
            "ratio_to_floor": round(wall[function]["median"] / floor_wall, 3),
            "per_process_ratios": _stats([s["wall_ms"] / floor_wall for s in runs]),
            "inside_process_ms": {
                "import_handler": round(import_ms, 1),
                "build_container": round(build_ms, 1),
            },
            "import_plus_build_over_floor_imports": round((import_ms + build_ms) / floor_import, 3),
            "modules_loaded": runs[0]["modules"],
            "eager_variant": {
                "wall_ms": wall[f"{function}.eager"],
                "ratio_to_floor": round(eager_wall / floor_wall, 3),
                "deferred_work_ms": round(statistics.median(s["deferred_ms"] for s in eager), 1),
                "boto3_clients_ms": {
                    service: round(statistics.median(s["client_ms"][service] for s in eager), 1)
                    for service in eager[0]["client_ms"]
                },
            },
            "lazy_loading_bought_ms": round(eager_wall - wall[function]["median"], 1),
            "importtime": importtime[function],
        }

    passed = {function: functions[function]["ratio_to_floor"] <= TARGET_RATIO for function in FUNCTIONS}
    result: dict[str, Any] = {
        "benchmark": NAME,
        "what": "cold start of each function as a fresh process (import handler + build container) vs "
        "a fresh process importing boto3, requests and cryptography",
        "machine": machine_info(PACKAGES),
        "method": {
            "processes_per_variant": processes,
            "interleaving": "one process of each variant in turn, the starting variant rotating",
            "wall": "spawn to exit, measured by the parent (interpreter start-up and teardown included)",
            "inside": "time.perf_counter around the import of the handler module and build_container",
            "environment": "the local stack (LocalAws + sandbox.stack.provision); build_container makes "
            "no boto3 client and calls nothing; the eager variant makes a callback's four clients and "
            "reads both secrets from moto",
            "floor_imports": "boto3, requests, cryptography hashes/padding/rsa/AESGCM",
            "importtime": "one -X importtime run each; its numbers are inflated by the tracing: use them "
            "for where, the wall times for how much",
            "warm_up": "one unmeasured process per variant first (bytecode and page caches)",
        },
        "target": {"max_ratio_to_floor": TARGET_RATIO, "measure": "median wall time of a fresh process"},
        "passed": all(passed.values()),
        "floor": {
            "wall_ms": wall["floor"],
            "inside_process_import_ms": round(floor_import, 1),
            "modules_loaded": samples["floor"][0]["modules"],
        },
        "floor_plus_one_boto3_client": {
            "wall_ms": wall["floor+client"],
            "first_client_ms": round(statistics.median(s["client_ms"] for s in samples["floor+client"]), 1),
            "ratio_to_floor": round(wall["floor+client"]["median"] / floor_wall, 3),
            "note": "reference only: the floor the brief sets is imports; a function using AWS also pays "
            "for its first boto3 client",
            "with_named_services_loader": {
                "wall_ms": wall["floor+client.named"],
                "first_client_ms": round(
                    statistics.median(s["client_ms"] for s in samples["floor+client.named"]), 1
                ),
            },
        },
        "functions": functions,
    }
    reference = result["floor_plus_one_boto3_client"]
    result["findings"] = [
        *_findings(functions, floor_wall),
        f"The floor plus one boto3 client takes {wall['floor+client']['median']:.0f} ms "
        f"({reference['ratio_to_floor']:.2f}x the floor): the first client costs "
        f"{reference['first_client_ms']:.0f} ms, botocore listing every service it ships and loading its "
        f"endpoint data. From app_auth.aws.client_factory(), whose loader knows the five services the "
        f"functions call, the same client costs "
        f"{reference['with_named_services_loader']['first_client_ms']:.0f} ms.",
        *CHANGES,
    ]
    result["summary"] = [
        {
            "measure": f"{function} cold start / floor",
            "value": f"{functions[function]['ratio_to_floor']:.2f}x",
            "detail": f"{functions[function]['wall_ms']['median']:.0f} vs {floor_wall:.0f} ms; import "
            f"{functions[function]['inside_process_ms']['import_handler']:.0f} + build "
            f"{functions[function]['inside_process_ms']['build_container']:.0f} ms; lazy loading bought "
            f"{functions[function]['lazy_loading_bought_ms']:.0f} ms (eager: "
            f"{functions[function]['eager_variant']['ratio_to_floor']:.2f}x)",
            "target": f"<= {TARGET_RATIO}x",
            "passed": passed[function],
        }
        for function in FUNCTIONS
    ]
    return result


# What moved out of the cold start, and why it could (the figures above say how much).
CHANGES = [
    "boto3 clients are made when first used (app_auth.aws.AwsClients): the refresher's scheduled run with "
    "nothing due makes only DynamoDB's, the merchant's link page only Secrets Manager's, and SQS's is made "
    "only to park a result after a storage failure.",
    "cryptography.x509 is imported only when a certificate-mode configuration loads; public-key mode never "
    "pays for it.",
    "The callback function finds its route from API Gateway's routeKey instead of Powertools' "
    "APIGatewayHttpResolver, whose package imports every resolver (AppSync's brings asyncio): ~22 ms.",
]


def _findings(functions: dict[str, Any], floor_wall: float) -> list[str]:
    findings = []
    for function, data in functions.items():
        inside = data["inside_process_ms"]
        beyond = data["importtime"]["beyond_floor"]
        packages = ", ".join(f"{name} {ms:g}" for name, ms in list(beyond["self_ms_by_package"].items())[:6])
        eager = data["eager_variant"]
        clients = ", ".join(f"{name} {ms:g}" for name, ms in eager["boto3_clients_ms"].items())
        findings.append(
            f"{function}: {data['wall_ms']['median']:.0f} ms against the floor's {floor_wall:.0f} ms "
            f"({data['ratio_to_floor']:.2f}x). Beyond the floor: importing the handler "
            f"({inside['import_handler']:.0f} ms in-process, {beyond['modules']} more modules; "
            f"by package, -X importtime self ms: {packages}); building the container takes "
            f"{inside['build_container']:.1f} ms."
        )
        findings.append(
            f"{function}: lazy loading keeps {eager['deferred_work_ms']:.0f} ms out of the cold start: the "
            f"clients ({clients} ms), the Alipay configuration with its keys, the Alipay client and the state "
            f"secret, made eagerly, take the process to {eager['wall_ms']['median']:.0f} ms "
            f"({eager['ratio_to_floor']:.2f}x the floor). The first request pays for the part it uses. "
            "Layer modules never imported: "
            + (
                ", ".join(
                    f"{m} {ms:g} ms" for m, ms in data["importtime"]["layer_modules_not_imported_ms"].items()
                )
                or "none"
            )
            + "."
        )
    return findings
