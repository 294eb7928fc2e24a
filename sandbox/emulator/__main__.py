"""Run the emulator alone: ``python -m sandbox.emulator --port 8787 --state-dir DIR``.

Generates throw-away credentials for one ISV app, writes the client configurations next to a
few fresh app_auth_codes, prints the base URL on stdout and serves until interrupted.

Files in DIR: ``alipay.json`` (public-key mode), ``alipay-cert.json`` (certificate mode, AES on),
``codes.txt`` (one unused app_auth_code per line).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from sandbox.credentials import DevCredentials

from .server import Emulator


def _write_private(path: Path, text: str) -> None:
    """The files hold a private key: readable by the owner only."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.emulator", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8787, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument(
        "--state-dir", type=Path, required=True, help="where to write alipay.json and codes.txt"
    )
    parser.add_argument("--app-id", default="2021000000000001", help="the ISV app id to generate")
    parser.add_argument("--codes", type=int, default=5, help="how many app_auth_codes to write to codes.txt")
    args = parser.parse_args(argv)

    creds = DevCredentials.generate(args.app_id)
    emulator = Emulator()
    emulator.register_app(creds)
    base_url = emulator.start(port=args.port)
    try:
        args.state_dir.mkdir(parents=True, exist_ok=True)
        _write_private(args.state_dir / "alipay.json", json.dumps(creds.client_config(base_url), indent=2))
        _write_private(
            args.state_dir / "alipay-cert.json",
            json.dumps(creds.client_config(base_url, cert_mode=True, aes=True), indent=2),
        )
        codes = [emulator.issue_code(creds.app_id) for _ in range(max(0, args.codes))]
        _write_private(args.state_dir / "codes.txt", "".join(code + "\n" for code in codes))
        print(base_url, flush=True)

        stopped = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stopped.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        while not stopped.wait(timeout=1.0):
            pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
