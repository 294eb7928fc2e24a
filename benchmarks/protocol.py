"""``protocol``: the client-side cost of one token exchange, without the network, against the
crypto floor.

A candidate is the shipped path, ``TokenApi.exchange_code`` over a real ``AlipayClient`` whose
``requests`` session has a transport adapter answering with a response signed ahead of time
(benchmarks/transport.py): build the body, AES-encrypt it, sign, go through ``requests``, verify
the response signature, AES-decrypt, parse into a ``TokenGrant``. The floor is what no client can
avoid: one RSA-2048 PKCS#1 v1.5 SHA-256 signature and one verification with ``cryptography``
directly, keys already loaded. Target: a call costs at most 1.3 times the floor.

Also measured, to explain the gap: the steps on their own (signing a prepared request, opening a
response, a bare ``Session.request``, ``Request.prepare`` + ``Session.send``: the two paths through
requests the client does not take), and a cProfile of the shipped call when it misses the target.
And checked: keys are parsed once per process (no key, certificate or config is loaded during
calls), and every candidate really works (its request signature verifies as Alipay would verify it, its response
yields the tokens).
"""

from __future__ import annotations

import base64
import cProfile
import pstats
import statistics
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any
from unittest import mock

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from alipay_v3 import TOKEN_PATH, AlipayAuth, AlipayConfig, open_response
from alipay_v3.signing import request_sign_content, response_sign_content
from alipay_v3.token_api import TokenGrant, parse_token_response
from benchmarks.harness import Op, machine_info, measure_interleaved, ratio, summarize
from benchmarks.transport import (
    APP_AUTH_CODE,
    check_exchange,
    offline_token_api,
)
from sandbox.credentials import DevCredentials

NAME = "protocol"
TARGET_RATIO = 1.3
MODES = {"key": (False, False), "key+aes": (False, True), "cert": (True, False), "cert+aes": (True, True)}
PACKAGES = ("cryptography", "requests", "urllib3")


def _config(creds: DevCredentials, cert_mode: bool, aes: bool) -> AlipayConfig:
    return AlipayConfig.from_mapping(creds.client_config("production", cert_mode=cert_mode, aes=aes))


def _build_ops(creds: DevCredentials) -> tuple[dict[str, Op], dict[str, str]]:
    """Every candidate, each checked once before it is timed."""
    ops: dict[str, Op] = {}
    app_public = creds.app_key.public_key()
    for mode, (cert_mode, aes) in MODES.items():
        api, adapter = offline_token_api(_config(creds, cert_mode, aes), creds.alipay_key, encrypted=aes)
        check_exchange(api, adapter, app_public, encrypted=aes)
        ops[mode] = lambda api=api, aes=aes: api.exchange_code(APP_AUTH_CODE, encrypt=aes)
        if mode == "key":
            key_api, key_adapter = api, adapter
    key_config = key_api.client.config

    # The floor: the same two RSA operations over contents of the real sizes, straight on cryptography.
    sent = key_adapter.last_request
    assert sent is not None
    request_body = sent.body if isinstance(sent.body, bytes) else b""
    auth_string = (sent.headers["Authorization"].split(" ", 1)[1]).rsplit(",sign=", 1)[0]
    sign_content = request_sign_content(auth_string, "POST", TOKEN_PATH, request_body)
    response = key_adapter.send(sent)
    verify_content = response_sign_content(
        response.headers["alipay-timestamp"], response.headers["alipay-nonce"], response.content
    )
    signature = base64.b64decode(response.headers["alipay-signature"])
    private_key, alipay_public = key_config.private_key.key, key_config.alipay_key_for(None)
    pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
    private_key.sign(sign_content, pkcs1, sha256)
    alipay_public.verify(signature, verify_content, pkcs1, sha256)  # raises if the floor is wrong

    def floor() -> None:
        private_key.sign(sign_content, pkcs1, sha256)
        alipay_public.verify(signature, verify_content, pkcs1, sha256)

    ops["floor"] = floor
    ops["crypto.sign"] = lambda: private_key.sign(sign_content, pkcs1, sha256)
    ops["crypto.verify"] = lambda: alipay_public.verify(signature, verify_content, pkcs1, sha256)

    # The steps on their own, key mode without AES.
    prepared = requests.Request(
        "POST",
        key_config.gateway + TOKEN_PATH,
        data=request_body,
        headers={"Content-Type": "application/json"},
    ).prepare()
    auth = AlipayAuth(key_config)
    ops["step.sign"] = lambda: auth(prepared)
    headers, body = response.headers, response.content

    def open_and_parse() -> TokenGrant:
        opened = open_response(key_config, 200, headers, body, encrypted=False)
        return TokenGrant(parse_token_response(opened.data, 0.0), opened.trace_id)

    ops["step.verify_parse"] = open_and_parse
    session = key_api.client.session
    url, plain_headers = key_config.gateway + TOKEN_PATH, {"Content-Type": "application/json"}
    ops["step.requests"] = lambda: session.request(
        "POST", url, data=request_body, headers=plain_headers, timeout=(3.05, 10.0)
    )
    environment = session.merge_environment_settings(url, {}, None, None, None)
    ops["step.prepared_send"] = lambda: session.send(
        requests.Request("POST", url, data=request_body, headers=plain_headers).prepare(),
        timeout=(3.05, 10.0),
        allow_redirects=False,
        **environment,
    )

    labels = {
        "floor": "RSA-2048 sign + verify, cryptography directly, keys loaded",
        "crypto.sign": "RSA-2048 sign alone",
        "crypto.verify": "RSA-2048 verify alone",
        **{mode: f"TokenApi.exchange_code, {mode} mode, canned transport" for mode in MODES},
        "step.sign": "AlipayAuth on a prepared request (sign + headers)",
        "step.verify_parse": "open_response + parse into TokenGrant (verify + parse)",
        "step.requests": "Session.request over the canned transport, no auth, no crypto",
        "step.prepared_send": "Request.prepare + Session.send, environment resolved once",
    }
    return ops, labels


def _count_loads_during(calls: Callable[[], None]) -> dict[str, int]:
    """How many keys, certificates and configs get parsed while ``calls`` runs."""
    targets = {
        "config_builds": (AlipayConfig, "from_mapping"),
        "private_key_loads": (serialization, "load_der_private_key"),
        "public_key_loads": (serialization, "load_der_public_key"),
        "pem_certificate_loads": (x509, "load_pem_x509_certificates"),
        "der_certificate_loads": (x509, "load_der_x509_certificate"),
    }
    with ExitStack() as stack:
        spies = {
            name: stack.enter_context(mock.patch.object(owner, attr, wraps=getattr(owner, attr)))
            for name, (owner, attr) in targets.items()
        }
        calls()
        return {name: spy.call_count for name, spy in spies.items()}


def _key_parsing_proof(creds: DevCredentials, calls_per_mode: int) -> dict[str, Any]:
    apis = []
    for cert_mode, aes in MODES.values():
        api, _ = offline_token_api(_config(creds, cert_mode, aes), creds.alipay_key, encrypted=aes)
        apis.append((api, aes, api.client.config))

    def exchanges() -> None:
        for api, aes, _ in apis:
            for _ in range(calls_per_mode):
                api.exchange_code(APP_AUTH_CODE, encrypt=aes)

    during_calls = _count_loads_during(exchanges)
    # The same counters around one certificate-mode config build: they must see it, or a zero above
    # would prove nothing.
    one_build = _count_loads_during(lambda: _config(creds, True, True) and None)
    return {
        "exchange_calls": calls_per_mode * len(apis),
        "loads_during_calls": during_calls,
        "loads_counted_for_one_cert_mode_config_build": one_build,
        "config_object_unchanged": all(api.client.config is config for api, _, config in apis),
        "parsed_once_per_process": not any(during_calls.values())
        and all(one_build[name] for name in ("config_builds", "private_key_loads", "pem_certificate_loads")),
    }


def _config_build_cost(creds: DevCredentials, builds: int) -> dict[str, float]:
    """What a call would pay on top if it parsed its configuration: the cost avoided."""
    cost = {}
    for mode, (cert_mode, aes) in MODES.items():
        mapping = creds.client_config("production", cert_mode=cert_mode, aes=aes)
        times = []
        for _ in range(builds):
            started = time.perf_counter_ns()
            AlipayConfig.from_mapping(mapping)
            times.append(time.perf_counter_ns() - started)
        cost[mode] = round(statistics.median(times) / 1000, 1)
    return cost


_AREAS = (
    ("/requests/", "requests + urllib3"),
    ("/urllib3/", "requests + urllib3"),
    ("/idna/", "requests + urllib3"),
    ("/alipay_v3/", "alipay_v3"),
    ("/benchmarks/", "benchmark transport"),
)
_STDLIB = "python stdlib + builtins"


def _profile(op: Op, calls: int) -> dict[str, Any]:
    """Self time by area. The standard library's and the builtins' self time is charged to whoever
    called them (``os.environ`` walks charged to requests, ``json`` to alipay_v3), since that is
    where a fix would go. cProfile inflates pure-Python costs; use it for where, not how much."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        op()
    profiler.disable()
    stats: dict[Any, Any] = pstats.Stats(profiler).stats  # type: ignore[attr-defined]

    def own_area(func: tuple[str, int, str]) -> str | None:
        file, _, name = func
        if file == "~" and "cryptography" in name:
            return "cryptography (RSA, AES)"
        return next((area for marker, area in _AREAS if marker in file), None)

    owners: dict[Any, str] = {}

    def owner(func: Any, depth: int = 0) -> str:
        if func in owners:
            return owners[func]
        area = own_area(func)
        if area is None:
            callers = stats[func][4] if func in stats else {}
            if callers and depth < 12:
                heaviest = max(callers, key=lambda caller: callers[caller][3])
                owners[func] = _STDLIB  # breaks cycles while the caller is resolved
                area = owner(heaviest, depth + 1)
            else:
                area = _STDLIB
        owners[func] = area
        return area

    by_area: dict[str, float] = {}
    rows = []
    for func, (_, ncalls, self_time, cumulative, _) in stats.items():
        area = owner(func)
        by_area[area] = by_area.get(area, 0.0) + self_time
        file, line, name = func
        where = (
            name
            if file == "~"
            else f"{file.split('site-packages/')[-1].split('/lib/python3')[-1]}:{line}({name})"
        )
        rows.append((self_time, cumulative, ncalls, area, where))
    total = sum(by_area.values())
    rows.sort(reverse=True)
    return {
        "profiler": "cProfile",
        "calls": calls,
        "self_time_share_by_area": {
            area: round(seconds / total, 3)
            for area, seconds in sorted(by_area.items(), key=lambda kv: -kv[1])
        },
        "top_self_time_outside_cryptography": [
            {
                "function": where,
                "charged_to": area,
                "calls_per_exchange": round(ncalls / calls, 1),
                "self_us_per_exchange": round(self_time / calls * 1e6, 1),
                "cumulative_us_per_exchange": round(cumulative / calls * 1e6, 1),
            }
            for self_time, cumulative, ncalls, area, where in rows
            if not area.startswith("cryptography")
        ][:15],
    }


def run(quick: bool = False) -> dict[str, Any]:
    rounds, iterations = (4, 40) if quick else (12, 200)
    creds = DevCredentials.generate()
    ops, labels = _build_ops(creds)
    samples = measure_interleaved(ops, rounds=rounds, iterations=iterations, warmup=20)
    summaries = {name: {"what": labels[name], **summarize(blocks)} for name, blocks in samples.items()}
    ratios = {mode: ratio(samples[mode], samples["floor"]) for mode in MODES}
    median = {name: summary["median_us"] for name, summary in summaries.items()}
    passed = all(ratios[mode]["ratio_of_medians"] <= TARGET_RATIO for mode in MODES)

    breakdown = {
        "note": "key mode, medians in microseconds; steps measured on their own, so parts need not add up exactly",
        "exchange": median["key"],
        "floor_sign_plus_verify": median["floor"],
        "overhead_over_floor": round(median["key"] - median["floor"], 1),
        "alipay_v3_sign_step_over_rsa_sign": round(median["step.sign"] - median["crypto.sign"], 1),
        "alipay_v3_open_and_parse_over_rsa_verify": round(
            median["step.verify_parse"] - median["crypto.verify"], 1
        ),
        "requests_session_request_alone": median["step.requests"],
        "requests_prepare_and_send_alone": median["step.prepared_send"],
        "rest_of_client_call": round(
            median["key"] - median["step.sign"] - median["step.verify_parse"] - median["step.prepared_send"],
            1,
        ),
    }
    result: dict[str, Any] = {
        "benchmark": NAME,
        "what": "client-side cost of one token exchange without the network, as a ratio to the crypto floor",
        "machine": machine_info(PACKAGES),
        "method": {
            "rounds": rounds,
            "calls_per_round_per_candidate": iterations,
            "interleaving": "candidates take turns in blocks each round; the starting candidate rotates",
            "timer": "time.perf_counter_ns around each call; gc left on",
            "ratio": "median of all candidate calls / median of all floor calls; spread = the ratio per round",
        },
        "target": {"max_ratio_to_floor": TARGET_RATIO, "applies_to": list(MODES)},
        "passed": passed,
        "ratios_to_floor": ratios,
        "candidates": summaries,
        "breakdown_us": breakdown,
        "config_build_us": _config_build_cost(creds, builds=5 if quick else 20),
        "key_parsing": _key_parsing_proof(creds, calls_per_mode=5 if quick else 25),
    }
    if not passed:
        key_api, _ = offline_token_api(_config(creds, False, False), creds.alipay_key, encrypted=False)
        result["profile_key_mode"] = _profile(
            lambda: key_api.exchange_code(APP_AUTH_CODE), calls=200 if quick else 1500
        )
    result["summary"] = [
        {
            "measure": f"exchange {mode} / crypto floor",
            "value": f"{ratios[mode]['ratio_of_medians']:.2f}x",
            "detail": f"{median[mode]:.0f} vs {median['floor']:.0f} us, per round "
            f"{ratios[mode]['per_round']['min']:.2f}-{ratios[mode]['per_round']['max']:.2f}",
            "target": f"<= {TARGET_RATIO}x",
            "passed": ratios[mode]["ratio_of_medians"] <= TARGET_RATIO,
        }
        for mode in MODES
    ] + [
        {
            "measure": "keys parsed once per process",
            "value": "yes" if result["key_parsing"]["parsed_once_per_process"] else "NO",
            "detail": f"{sum(result['key_parsing']['loads_during_calls'].values())} loads "
            f"in {result['key_parsing']['exchange_calls']} calls",
            "target": "no parsing per call",
            "passed": result["key_parsing"]["parsed_once_per_process"],
        }
    ]
    return result
