"""The world of a fast test: one clock, the in-memory AWS fakes, a scripted Alipay, and the lifecycle
services wired over them as ``app_auth.container.build_container`` wires them over boto3.

Everything runs in this process, on a clock that moves only when a test moves it (the services'
``sleep`` moves it too, so a wait costs no time).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from alipay_v3 import AlipayConfig, AppToken, sign_notification
from app_auth.authorize import SOURCE, AuthorizationService
from app_auth.crypto import EnvelopeCipher
from app_auth.events import EventPublisher
from app_auth.flow_store import FlowStore
from app_auth.grants import Grants
from app_auth.links import StateSigner
from app_auth.notifications import AUTH_NOTIFY, CANCELLED, NotificationService
from app_auth.refresh import RefreshPolicy, RefreshService
from app_auth.replay import Replayer, ReplayQueue
from app_auth.run_lease import RunLease
from app_auth.settings import Settings
from app_auth.table import Table
from app_auth.token_store import TokenStore
from sandbox.credentials import DevCredentials
from tests.fakes.clock import Clock
from tests.fakes.dynamodb import FakeDynamoDB
from tests.fakes.events import FakeEvents
from tests.fakes.kms import FakeKMS
from tests.fast.fake_alipay import FakeTokenApi

MERCHANT_APP = "2088000000000001"
CHINA_TIME = dt.timezone(dt.timedelta(hours=8))
STATE_KEY = b"fast-tier-state-signing-key-of-32+bytes"
QUEUE_URL = "https://sqs.example/replay"


class FakeSQS:
    """One standard queue, as ``ReplayQueue`` uses it: ``sent`` records every send, ``waiting`` holds
    the messages not deleted; a received message is hidden for its visibility timeout (on the
    world's clock). ``down`` makes every call fail; ``receives`` counts ReceiveMessage calls."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.sent: list[dict[str, str]] = []
        self.waiting: dict[str, dict[str, Any]] = {}  # message id -> body, receipt, visible_at
        self.receives = 0
        self.down = False

    def _fail_if_down(self, operation: str) -> None:
        if self.down:
            raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": ""}}, operation)

    def send_message(self, *, QueueUrl: str, MessageBody: str) -> dict[str, str]:
        self._fail_if_down("SendMessage")
        self.sent.append({"QueueUrl": QueueUrl, "MessageBody": MessageBody})
        message_id = str(len(self.sent))
        self.waiting[message_id] = {"body": MessageBody, "receipt": None, "visible_at": 0.0}
        return {"MessageId": message_id}

    def receive_message(
        self, *, QueueUrl: str, MaxNumberOfMessages: int, WaitTimeSeconds: int, VisibilityTimeout: int
    ) -> dict[str, Any]:
        self._fail_if_down("ReceiveMessage")
        self.receives += 1
        visible = [(i, m) for i, m in self.waiting.items() if m["visible_at"] <= self._clock()]
        messages = []
        for message_id, message in visible[:MaxNumberOfMessages]:
            message["receipt"] = uuid.uuid4().hex
            message["visible_at"] = self._clock() + VisibilityTimeout
            messages.append(
                {"MessageId": message_id, "ReceiptHandle": message["receipt"], "Body": message["body"]}
            )
        return {"Messages": messages} if messages else {}

    def delete_message(self, *, QueueUrl: str, ReceiptHandle: str) -> dict[str, Any]:
        self._fail_if_down("DeleteMessage")
        self.waiting = {i: m for i, m in self.waiting.items() if m["receipt"] != ReceiptHandle}
        return {}


class TokenWritesFailingDynamoDB(FakeDynamoDB):
    """FakeDynamoDB whose writes to token items fail while ``failing`` is set (a throttled table),
    and whose rotation commits fail while ``failing_commits`` is."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False
        self.failing_commits = False

    def update_item(self, **kwargs: Any) -> dict[str, Any]:
        if self.failing_commits and "refreshed_at" in kwargs.get("UpdateExpression", ""):
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": ""}}, "UpdateItem")
        return super().update_item(**kwargs)

    def put_item(self, *, TableName: str, Item: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        if self.failing and Item["pk"]["S"].startswith("APP#"):
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": ""}}, "PutItem"
            )
        return super().put_item(TableName=TableName, Item=Item, **kwargs)


@dataclass
class World:
    clock: Clock
    creds: DevCredentials
    config: AlipayConfig
    settings: Settings
    dynamodb: FakeDynamoDB
    kms: FakeKMS
    events: FakeEvents
    sqs: FakeSQS
    alipay: FakeTokenApi
    store: TokenStore
    flow: FlowStore
    publisher: EventPublisher
    grants: Grants
    signer: StateSigner
    authorization: AuthorizationService
    notifications: NotificationService
    refresher: RefreshService
    replay: ReplayQueue
    replayer: Replayer
    _codes: list[int] = field(default_factory=lambda: [0])

    # -- the callback ------------------------------------------------------------------------------

    def new_code(self) -> str:
        self._codes[0] += 1
        return f"P1798b{self._codes[0]:026d}"

    def callback_params(self, code: str, state: str | None) -> dict[str, str]:
        """What Alipay's redirect brings back to the callback."""
        params = {"app_id": self.config.app_id, "source": SOURCE, "app_auth_code": code}
        if state is not None:
            params["state"] = state
        return params

    # -- notifications -----------------------------------------------------------------------------

    def china_time(self, at: float | None = None) -> str:
        return dt.datetime.fromtimestamp(self.clock() if at is None else at, CHINA_TIME).strftime(
            "%Y-%m-%d %H:%M:%S"
        )

    def authorized_notification(
        self, token: AppToken, *, notify_id: str | None = None, granted_at: float | None = None
    ) -> dict[str, str]:
        """An ``open_app_auth_notify`` form as Alipay posts it (unsigned: see ``signed``), now; its
        ``auth_time`` is ``granted_at``, by default when the token was issued."""
        detail = {
            "app_auth_token": token.app_auth_token,
            "app_refresh_token": token.app_refresh_token,
            "user_id": token.user_id,
            "auth_app_id": token.auth_app_id,
            "app_id": self.config.app_id,
            "expires_in": str(token.expires_in),
            "re_expires_in": str(token.re_expires_in),
            "auth_time": self.china_time(token.obtained_at if granted_at is None else granted_at),
        }
        return {
            "notify_id": notify_id or uuid.uuid4().hex,
            "notify_type": AUTH_NOTIFY,
            "notify_time": self.china_time(),
            "charset": "utf-8",
            "version": "1.0",
            "app_id": self.config.app_id,
            "auth_app_id": token.auth_app_id,
            "status": "execute_auth",
            "biz_content": json.dumps({"notify_context": {"trigger": "user_app_auth"}, "detail": detail}),
        }

    def cancellation(
        self,
        auth_app_id: str,
        *,
        notify_id: str | None = None,
        user_id: str = "2088100000000001",
        with_notify_id: bool = True,
    ) -> dict[str, str]:
        """An ``alipay.open.auth.appauth.cancelled`` message-service form (unsigned)."""
        params = {
            "utc_timestamp": str(int(self.clock() * 1000)),
            "msg_method": CANCELLED,
            "app_id": self.config.app_id,
            "msg_type": "sys",
            "msg_uid": user_id,
            "msg_app_id": auth_app_id,
            "version": "1.1",
            "charset": "utf-8",
            "biz_content": json.dumps({"auth_app_id": auth_app_id, "user_id": user_id}),
        }
        if with_notify_id:
            params["notify_id"] = notify_id or uuid.uuid4().hex
        return params

    def signed(self, params: dict[str, str]) -> dict[str, str]:
        """Signed with Alipay's key, as Alipay signs a notification."""
        return sign_notification(params, self.creds.alipay_key)

    def another_refresher(self, owner: str) -> RefreshService:
        """A second refresher (another execution environment) over the same table and Alipay."""
        return RefreshService(
            settings=self.settings,
            store=self.store,
            token_api=lambda session: self.alipay,  # type: ignore[arg-type,return-value]
            publisher=self.publisher,
            policy=self.refresher.policy,
            clock=self.clock,
            owner=owner,
            run_lease=self.refresher.run_lease,
        )

    # -- reading back ------------------------------------------------------------------------------

    def items(self, prefix: str) -> list[dict[str, Any]]:
        table = self.dynamodb.tables.get(self.settings.table_name, {})
        return [item for (pk, _), item in table.items() if pk.startswith(prefix)]


def build_world(
    creds: DevCredentials,
    config: AlipayConfig,
    *,
    dynamodb: FakeDynamoDB | None = None,
    policy: RefreshPolicy | None = None,
    allow_stateless_callbacks: bool = False,
    merchant_apps: tuple[str, ...] = (MERCHANT_APP,),
    replay_queue_url: str | None = QUEUE_URL,
) -> World:
    """The services over fakes, wired as ``build_container`` wires them."""
    clock = Clock()
    settings = Settings(
        table_name="alipay-app-auth-fast",
        alipay_secret_id="alipay-secret",
        state_secret_id="state-secret",
        kms_key_id="alias/tokens",
        event_bus_name="alipay-app-auth",
        replay_queue_url=replay_queue_url,
        callback_url="https://isv.example/callback",
        allow_stateless_callbacks=allow_stateless_callbacks,
    )
    dynamodb = dynamodb or FakeDynamoDB()
    kms, events, sqs = FakeKMS(), FakeEvents(), FakeSQS(clock)
    alipay = FakeTokenApi(clock, merchant_apps)
    cipher = EnvelopeCipher(kms, settings.kms_key_id, settings.table_name)
    table = Table(dynamodb, settings.table_name)
    store = TokenStore(table, cipher, settings.schedule, clock=clock)
    flow = FlowStore(table, clock=clock)
    publisher = EventPublisher(events, settings.event_bus_name, clock=clock)
    grants = Grants(store, publisher, query=alipay.query)
    signer = StateSigner(STATE_KEY, clock=clock)
    replay = ReplayQueue(sqs, settings.replay_queue_url, cipher)
    replayer = Replayer(replay, grants, isv_app_id=lambda: config.app_id)
    authorization = AuthorizationService(
        settings=settings,
        flow=flow,
        grants=grants,
        signer=lambda: signer,
        token_api=lambda: alipay,  # type: ignore[arg-type,return-value]  # TokenApi's surface
        isv_app_id=lambda: config.app_id,
        replay=replay,
        clock=clock,
        sleep=clock.advance,
    )
    notifications = NotificationService(
        tokens=store,
        flow=flow,
        grants=grants,
        alipay_config=lambda: config,
        publisher=publisher,
        clock=clock,
    )
    refresher = RefreshService(
        settings=settings,
        store=store,
        token_api=lambda session: alipay,  # type: ignore[arg-type,return-value]
        publisher=publisher,
        policy=policy,
        clock=clock,
        owner="refresher-1",
        run_lease=RunLease(table, "refresh", clock=clock),  # as build_container wires it
        replay=replay,
        replayer=replayer,
        sleep=clock.advance,
    )
    return World(
        clock=clock,
        creds=creds,
        config=config,
        settings=settings,
        dynamodb=dynamodb,
        kms=kms,
        events=events,
        sqs=sqs,
        alipay=alipay,
        store=store,
        flow=flow,
        publisher=publisher,
        grants=grants,
        signer=signer,
        authorization=authorization,
        notifications=notifications,
        refresher=refresher,
        replay=replay,
        replayer=replayer,
    )
