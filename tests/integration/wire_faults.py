"""AWS answering with an error on the real botocore wire: a response built in place of the one the
service would send, returned from a ``before-send`` handler, so botocore's own retries and parsing run."""

from __future__ import annotations

import json
from collections.abc import Iterator

from botocore.awsrequest import AWSPreparedRequest, AWSResponse

# The JSON protocol version each service speaks (its error shape differs by it).
_CONTENT_TYPES = {"dynamodb": "application/x-amz-json-1.0", "kms": "application/x-amz-json-1.1"}


def error_response(request: AWSPreparedRequest, service: str, status: int, code: str) -> AWSResponse:
    body = json.dumps({"__type": code, "message": "injected"}).encode()
    return AWSResponse(request.url, status, {"Content-Type": _CONTENT_TYPES[service]}, _Raw(body))


class _Raw:
    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: object) -> Iterator[bytes]:
        yield self._body
