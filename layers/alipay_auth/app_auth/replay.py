"""The replay queue's message: where a callback's result goes when Alipay answered but the table did
not take it, and how ``alipay-auth replay`` reads it back. Writer and reader of the format, together.

The tokens travel sealed (the same envelope encryption as the table, bound to ``PARKED#<digest>``);
the message names only the merchant apps.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from alipay_v3 import AlipayError, AppToken

from .crypto import DataKey, EnvelopeCipher
from .errors import InvalidRequest

logger = logging.getLogger(__name__)

_KIND = "authorization"
_FIELD = "parked"


@dataclass(frozen=True)
class ParkedResult:
    tokens: tuple[AppToken, ...]
    isv_ref: str | None


class ReplayQueue:
    def __init__(self, sqs: Any, queue_url: str | None, cipher: EnvelopeCipher) -> None:
        self._sqs = sqs
        self._url = queue_url
        self._cipher = cipher

    def park(
        self,
        tokens: tuple[AppToken, ...],
        *,
        isv_ref: str | None,
        digest: str,
        key: DataKey | None = None,
    ) -> bool:
        """Send the sealed result; False when there is no queue or the send failed."""
        if not self._url:
            return False
        pk = f"PARKED#{digest}"
        sealed = self._cipher.seal(
            {
                "tokens": [
                    {
                        "auth_app_id": t.auth_app_id,
                        "user_id": t.user_id,
                        "app_auth_token": t.app_auth_token,
                        "app_refresh_token": t.app_refresh_token,
                        "expires_in": t.expires_in,
                        "re_expires_in": t.re_expires_in,
                        "obtained_at": t.obtained_at,
                    }
                    for t in tokens
                ],
                "isv_ref": isv_ref,
            },
            pk=pk,
            field=_FIELD,
            key=key,
        )
        body = {
            "kind": _KIND,
            "pk": pk,
            "auth_app_ids": [t.auth_app_id for t in tokens],
            "sealed": {k: ({"B": v["B"].hex()} if "B" in v else v) for k, v in sealed["M"].items()},
        }
        try:
            self._sqs.send_message(QueueUrl=self._url, MessageBody=json.dumps(body))
        except Exception:  # the last line of defence must not raise past the caller
            logger.exception("parking an authorization result failed")
            return False
        return True

    def open(self, body_text: str) -> ParkedResult:
        """A message's result; ``InvalidRequest`` when it is not one of ours or is incomplete."""
        try:
            body = json.loads(body_text)
            if body.get("kind") != _KIND or not str(body.get("pk", "")).startswith("PARKED#"):
                raise ValueError("not a parked authorization")
            sealed = {
                "M": {
                    name: ({"B": bytes.fromhex(value["B"])} if "B" in value else value)
                    for name, value in body["sealed"].items()
                }
            }
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidRequest(
                "the message is not a parked authorization", code="malformed-message"
            ) from exc
        payload = self._cipher.open(sealed, pk=body["pk"], field=_FIELD)
        try:
            tokens = tuple(
                AppToken.from_fields(fields, obtained_at=float(fields["obtained_at"]))
                for fields in payload.get("tokens", [])
            )
        except (AlipayError, ValueError, KeyError, TypeError) as exc:
            raise InvalidRequest("the parked tokens are incomplete", code="malformed-message") from exc
        return ParkedResult(tokens, payload.get("isv_ref"))
