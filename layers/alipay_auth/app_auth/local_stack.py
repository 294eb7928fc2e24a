"""The file ``make serve`` leaves for ``alipay-auth --local``: where it is and what it holds.

One JSON document, written by the local stack (sandbox/demo.py) and read by the operator CLI:

    {"kind": "alipay-app-auth local stack", "pid": 4242, "api_url": "http://127.0.0.1:8080",
     "region": "ap-east-1", "endpoints": {"default": "http://...", "dynamodb": "http://..."},
     "environment": {"TABLE_NAME": "...", ...}}

It holds names, ARNs and endpoints, never a secret or credentials: ``AWS_*`` variables are left out.
``endpoints`` maps a boto3 service name to its URL; ``default`` serves every other service. ``pid``
is the process serving the stack, so a reader can tell a stale file from a running stack.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

LOCAL_STACK_FILE = Path(".local-stack") / "env.json"  # in the checkout, found from any directory below
LOCAL_STACK_FILE_VARIABLE = "ALIPAY_AUTH_LOCAL_FILE"  # elsewhere than LOCAL_STACK_FILE (serve and CLI)
_LOCAL_FILE_KIND = "alipay-app-auth local stack"


class NotALocalStackFile(ValueError):
    """The file reads, but is not a document ``write_local_stack_file`` wrote."""


@dataclass(frozen=True)
class LocalStack:
    """A local stack file, read and checked."""

    path: Path
    pid: int
    region: str
    endpoints: dict[str, str]
    environment: dict[str, str]
    api_url: str | None = None

    def endpoint(self, service: str) -> str:
        """The URL that serves the boto3 service ``service``."""
        return self.endpoints.get(service, self.endpoints["default"])

    def running(self) -> bool:
        """Whether the process that wrote the file is still alive (else the file is stale)."""
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, someone else's
            return True
        return True


def write_local_stack_file(
    path: Path,
    *,
    environment: Mapping[str, str],
    endpoints: Mapping[str, str],
    region: str,
    api_url: str,
    pid: int | None = None,
) -> None:
    """What ``make serve`` leaves for ``alipay-auth --local``: names, ARNs and endpoints, no secret.

    ``endpoints`` maps a boto3 service name to its URL; ``default`` serves every other service.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "kind": _LOCAL_FILE_KIND,
        "pid": os.getpid() if pid is None else pid,
        "api_url": api_url,
        "region": region,
        "endpoints": dict(endpoints),
        "environment": {k: v for k, v in environment.items() if not k.startswith("AWS_")},
    }
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)


def named_local_stack_file(environ: Mapping[str, str] | None = None) -> Path | None:
    """The file ``$ALIPAY_AUTH_LOCAL_FILE`` names, if it names one."""
    named = (os.environ if environ is None else environ).get(LOCAL_STACK_FILE_VARIABLE)
    return Path(named) if named else None


def find_local_stack_file(start: Path) -> Path | None:
    """``LOCAL_STACK_FILE`` in ``start`` or the nearest parent that has one."""
    for directory in (start, *start.parents):
        candidate = directory / LOCAL_STACK_FILE
        if candidate.is_file():
            return candidate
    return None


def read_local_stack_file(path: Path) -> LocalStack:
    """The document at ``path``; OSError if it cannot be read, NotALocalStackFile if it is not one."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))  # an OSError is the caller's to phrase
        endpoints = {str(k): str(v) for k, v in document["endpoints"].items()}
        environment = {str(k): str(v) for k, v in document["environment"].items()}
        region, pid = str(document["region"]), int(document["pid"])
        if document.get("kind") != _LOCAL_FILE_KIND or "default" not in endpoints:
            raise ValueError("not a local stack file")
        api_url = document.get("api_url")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise NotALocalStackFile(f"{path} is not a local stack file") from exc
    return LocalStack(path, pid, region, endpoints, environment, api_url=api_url)
