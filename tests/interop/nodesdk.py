"""Driving the official Node SDK (npm alipay-sdk@4.14.0) from Python: the client of ``oracle.cjs``.

``oracle.cjs`` speaks JSON lines over stdin/stdout and runs a capture HTTP server on 127.0.0.1.
One process serves the whole test session (see ``conftest.py``), so a few hundred cases stay fast.
"""

from __future__ import annotations

import json
import queue
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from alipay_v3 import AlipayConfig
from sandbox.credentials import DevCredentials, cert_pem, pem_body, private_pem, public_pem

ROOT = Path(__file__).resolve().parents[2]
SDK_DIR = ROOT / "node_modules" / "alipay-sdk"
ORACLE = Path(__file__).with_name("oracle.cjs")
SDK_VERSION = "4.14.0"
CALL_TIMEOUT = 30.0  # seconds for one command; the SDK's own HTTP timeout is 10 s


class OracleError(RuntimeError):
    """The harness answered ``ok: false`` (a bug in a test or in the harness, not a finding)."""


class Oracle:
    """A JSON-lines client of ``oracle.cjs``. Commands run strictly one after another."""

    def __init__(self) -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - open as long as the node process runs
        self._proc = subprocess.Popen(
            ["node", str(ORACLE)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=ROOT,
            text=True,
            encoding="utf-8",
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._lock = threading.Lock()
        self._next_id = 0
        ready = self._receive("ready")
        self.sdk_version: str = ready["sdkVersion"]
        self.port: int = ready["port"]
        self.capture_url = f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _stderr_text(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-2000:]

    def _receive(self, expected_id: object) -> Any:
        try:
            line = self._lines.get(timeout=CALL_TIMEOUT)
        except queue.Empty:
            raise OracleError(f"oracle.cjs did not answer within {CALL_TIMEOUT:.0f} s") from None
        if line is None:
            raise OracleError(f"oracle.cjs exited (code {self._proc.poll()}); stderr:\n{self._stderr_text()}")
        message = json.loads(line)
        if message.get("id") != expected_id:
            raise OracleError(f"oracle.cjs answered id {message.get('id')!r}, expected {expected_id!r}")
        if not message["ok"]:
            raise OracleError(f"oracle.cjs: {message['error']}")
        return message["result"]

    def call(self, cmd: str, **params: Any) -> Any:
        with self._lock:
            self._next_id += 1
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps({"id": self._next_id, "cmd": cmd, **params}) + "\n")
            self._proc.stdin.flush()
            return self._receive(self._next_id)

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._stderr.close()


def sdk_config(
    creds: DevCredentials,
    *,
    cert_mode: bool,
    aes: bool,
    pkcs8: bool,
    pem: bool,
    key_type_hint: bool = True,
    endpoint: str | None = None,
) -> dict[str, Any]:
    """The same credentials as ``creds.client_config(...)``, in the Node SDK's config shape.

    ``keyType: "PKCS8"`` is what the SDK needs for a PKCS#8 PEM (protocol doc 1.3); for a bare
    base64 PKCS#8 key it also works without it, which ``key_type_hint=False`` exercises.
    """
    key = private_pem(creds.app_key, pkcs8=pkcs8)
    config: dict[str, Any] = {"appId": creds.app_id, "privateKey": key if pem else pem_body(key)}
    if pkcs8 and (pem or key_type_hint):
        config["keyType"] = "PKCS8"
    if cert_mode:
        config["appCertContent"] = cert_pem(creds.app_cert)
        config["alipayPublicCertContent"] = cert_pem(creds.alipay_cert)
        config["alipayRootCertContent"] = "".join(cert_pem(c) for c in creds.root_bundle)
    else:
        public = public_pem(creds.alipay_key)
        config["alipayPublicKey"] = public if pem else pem_body(public)
    if aes:
        config["encryptKey"] = creds.encrypt_key
    if endpoint is not None:
        config["endpoint"] = endpoint
    return config


class ConfigCache:
    """``AlipayConfig`` objects are immutable and parsing certificates costs time: build each once."""

    def __init__(self) -> None:
        self._configs: dict[tuple[Any, ...], AlipayConfig] = {}

    def get(
        self, creds: DevCredentials, gateway: str, *, cert_mode: bool, aes: bool, pkcs8: bool, pem: bool
    ) -> AlipayConfig:
        key = (creds.app_id, gateway, cert_mode, aes, pkcs8, pem)
        if key not in self._configs:
            mapping = creds.client_config(gateway, cert_mode=cert_mode, aes=aes, pkcs8=pkcs8, pem=pem)
            self._configs[key] = AlipayConfig.from_mapping(mapping)
        return self._configs[key]
