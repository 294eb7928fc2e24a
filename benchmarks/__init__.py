"""Benchmarks of the protocol layer: ``make bench`` (``python -m benchmarks [name ...]``).

Each benchmark writes ``benchmarks/results/<name>.json``. Benchmarks are not tests: they
measure and report against a target, they never fail a build on a number.

Only the standard library may be imported at package level: ``benchmarks.harness`` also runs
inside ``.venv-bench-sdk``, where neither ``alipay_v3`` nor ``cryptography`` is installed.
"""
