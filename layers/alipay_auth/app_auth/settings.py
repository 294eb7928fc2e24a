"""Deployment settings, read from the environment once per execution environment.

Nothing reads the environment at import time: ``Settings.from_env()`` is called by the container
factory, and tests build ``Settings`` directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .schedule import DAY, RotationSchedule


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True)
class Settings:
    table_name: str
    alipay_secret_id: str
    state_secret_id: str
    kms_key_id: str
    event_bus_name: str
    replay_queue_url: str | None = None
    alipay_environment: str = "production"  # production | sandbox
    consent_page_url: str | None = None  # overrides the environment's consent page (the emulator's)
    callback_url: str | None = None  # the redirect URI registered in the Alipay console
    allow_stateless_callbacks: bool = False
    success_redirect_url: str | None = None
    state_ttl_seconds: int = 7 * DAY
    code_claim_ttl_seconds: int = 2 * DAY
    schedule: RotationSchedule = field(default_factory=RotationSchedule)
    # The token store's logical identity, which every sealed value is bound to: it stays when the
    # table is restored under another name. Values sealed before it existed are bound to the
    # physical name of the table that first held them (``sealed_table_name``).
    token_store_id: str = ""
    sealed_table_name: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "token_store_id", self.token_store_id or self.table_name)
        object.__setattr__(self, "sealed_table_name", self.sealed_table_name or self.table_name)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        missing = [
            n for n in ("TABLE_NAME", "SECRET_ARN", "STATE_SECRET_ARN", "TOKEN_KMS_KEY_ID") if not env.get(n)
        ]
        if missing:
            raise RuntimeError(f"missing environment variables: {', '.join(missing)} (set by template.yaml)")
        return cls(
            table_name=env["TABLE_NAME"],
            alipay_secret_id=env["SECRET_ARN"],
            state_secret_id=env["STATE_SECRET_ARN"],
            kms_key_id=env["TOKEN_KMS_KEY_ID"],
            event_bus_name=env.get("EVENT_BUS_NAME", "default"),
            replay_queue_url=env.get("REPLAY_QUEUE_URL") or None,
            alipay_environment=env.get("ALIPAY_ENVIRONMENT", "production"),
            consent_page_url=env.get("CONSENT_PAGE_URL") or None,
            callback_url=env.get("CALLBACK_URL") or None,
            allow_stateless_callbacks=_flag(env.get("ALLOW_STATELESS_CALLBACKS")),
            success_redirect_url=env.get("SUCCESS_REDIRECT_URL") or None,
            token_store_id=env.get("TOKEN_STORE_ID", ""),
            sealed_table_name=env.get("SEALED_TABLE_NAME", ""),
            schedule=RotationSchedule(
                lead_seconds=int(float(env.get("REFRESH_LEAD_DAYS", "30")) * DAY),
                max_age_seconds=int(float(env.get("REFRESH_MAX_AGE_DAYS", "0")) * DAY),
            ),
        )
