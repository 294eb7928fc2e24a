"""``python -m sandbox.emulator``: runs alone, writes a usable client configuration and codes."""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

from alipay_v3 import AlipayClient, AlipayConfig, TokenApi

ROOT = Path(__file__).resolve().parents[2]


def test_standalone_emulator_serves_the_configuration_it_writes(tmp_path):
    state_dir, stderr_path = tmp_path / "state", tmp_path / "stderr.log"
    command = [sys.executable, "-m", "sandbox.emulator", "--port", "0", "--state-dir", str(state_dir)]
    with (
        stderr_path.open("w") as stderr,
        subprocess.Popen(
            [*command, "--codes", "2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True
        ) as process,
    ):
        watchdog = threading.Timer(60, process.kill)  # a hung start must not hang the suite
        watchdog.start()
        try:
            assert process.stdout is not None
            base_url = process.stdout.readline().strip()
            assert base_url.startswith("http://127.0.0.1:"), stderr_path.read_text()

            key_config = AlipayConfig.from_file(state_dir / "alipay.json")
            cert_config = AlipayConfig.from_file(state_dir / "alipay-cert.json")
            codes = (state_dir / "codes.txt").read_text().split()
            assert key_config.gateway == base_url and not key_config.cert_mode
            assert cert_config.cert_mode and cert_config.aes is not None
            assert len(codes) == 2
            for name in ("alipay.json", "alipay-cert.json", "codes.txt"):
                assert stat.S_IMODE((state_dir / name).stat().st_mode) == 0o600

            key_client = AlipayClient(key_config, max_attempts=1)
            cert_client = AlipayClient(cert_config, max_attempts=1)
            with key_client.session, cert_client.session:
                token = TokenApi(key_client).exchange_code(codes[0]).primary
                cert_tokens = TokenApi(cert_client)
                assert cert_tokens.exchange_code(codes[1], encrypt=True).primary.app_auth_token
                assert cert_tokens.refresh(token.app_refresh_token, encrypt=True).primary.app_auth_token

            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=15) == 0
        finally:
            watchdog.cancel()
            if process.poll() is None:
                process.kill()
    assert token.app_auth_token not in stderr_path.read_text()
