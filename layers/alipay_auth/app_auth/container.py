"""Wiring: builds the clients and use cases once per execution environment.

Handlers call ``get_container()``; tests call ``set_container()`` with one built from their own
clients (DynamoDB Local, moto) or let it build from the environment those stand-ins set.
The Alipay configuration is fetched from Secrets Manager on first use, not at cold start, and
fetched again when Alipay signs with a certificate we do not hold yet.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from botocore.exceptions import BotoCoreError, ClientError

from alipay_v3 import AlipayClient, AlipayConfig, ConfigError, TokenApi

from .authorize import AuthorizationService
from .aws import AwsClients
from .crypto import EnvelopeCipher
from .errors import NotConfigured, StorageError
from .events import EventPublisher
from .flow_store import FlowStore
from .grants import Grants
from .links import StateSigner
from .notifications import NotificationService
from .refresh import RefreshPolicy, RefreshService
from .replay import Replayer, ReplayQueue
from .run_lease import RunLease
from .settings import Settings
from .table import Table
from .token_store import TokenStore


class SecretSource:
    """Reads the two secrets; the Alipay configuration is parsed once and kept until reloaded."""

    def __init__(self, secrets: Any, settings: Settings) -> None:
        self._secrets = secrets
        self._settings = settings
        self._lock = threading.Lock()
        self._config: AlipayConfig | None = None

    def _read(self, secret_id: str) -> str:
        try:
            value: str = self._secrets.get_secret_value(SecretId=secret_id)["SecretString"]
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(f"the secret {secret_id.rsplit(':', 1)[-1]} could not be read") from exc
        return value

    def alipay_config(self) -> AlipayConfig:
        with self._lock:
            if self._config is None:
                self._config = _load_alipay_config(self._read(self._settings.alipay_secret_id))
            return self._config

    def reload_alipay_config(self) -> AlipayConfig:
        with self._lock:
            self._config = None
        return self.alipay_config()

    def state_key(self) -> bytes:
        key = self._read(self._settings.state_secret_id).encode()
        if len(key) < 32:
            raise NotConfigured("the state signing secret must be at least 32 characters")
        return key


def _load_alipay_config(text: str) -> AlipayConfig:
    """The protocol's ConfigError becomes the lifecycle's NotConfigured, saying what to do."""
    try:
        return AlipayConfig.from_json(text)
    except ConfigError as exc:
        if "REPLACE_ME" in text:
            message = "the Alipay secret still holds the placeholder the stack created"
        else:
            message = f"the Alipay configuration in the secret does not load: {exc.message}"
        raise NotConfigured(
            f"{message}; put the ISV app's configuration there with `alipay-auth keys import`"
        ) from exc


@dataclass
class Container:
    settings: Settings
    store: TokenStore
    flow: FlowStore
    grants: Grants
    cipher: EnvelopeCipher
    secrets: SecretSource
    publisher: EventPublisher
    token_api: Callable[[], TokenApi]  # the callback's, shared; built on first use
    new_token_api: Callable[[requests.Session | None], TokenApi]  # another client, on a session of yours
    authorization: AuthorizationService
    notifications: NotificationService
    refresher: RefreshService
    replayer: Replayer  # drains the replay queue: the refresher's runs and ``alipay-auth replay``
    clients: AwsClients


def build_container(
    settings: Settings,
    *,
    client: Callable[[str], Any] | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    alipay_client_options: dict[str, Any] | None = None,
    refresh_policy: RefreshPolicy | None = None,
    wrap_token_api: Callable[[TokenApi], TokenApi] | None = None,
) -> Container:
    """Everything from settings; ``client(service)`` makes boto3 clients (``aws.client_factory()``
    by default), each when first used. ``alipay_client_options`` go to every ``AlipayClient``;
    ``wrap_token_api`` sees every ``TokenApi`` built (tools trace or time the calls with it)."""
    clients = AwsClients(client)
    cipher = EnvelopeCipher(
        clients.deferred("kms"),
        settings.kms_key_id,
        settings.token_store_id,
        legacy_table=settings.sealed_table_name,
    )
    table = Table(clients.deferred("dynamodb"), settings.table_name)
    store = TokenStore(table, cipher, settings.schedule, clock=clock)
    flow = FlowStore(table, clock=clock)
    secrets = SecretSource(clients.deferred("secretsmanager"), settings)
    publisher = EventPublisher(clients.deferred("events"), settings.event_bus_name, clock=clock)

    def new_token_api(session: requests.Session | None = None) -> TokenApi:
        client = AlipayClient(
            secrets.alipay_config(),
            session=session,
            reload_config=secrets.reload_alipay_config,
            **(alipay_client_options or {}),
        )
        api = TokenApi(client, clock=clock)
        return wrap_token_api(api) if wrap_token_api else api

    get_token_api = _once(new_token_api)
    # Short: a grant's scope and a notification's facts are asked inside a callback's deadline
    grants = Grants(store, publisher, query=lambda token: get_token_api().query(token, timeout=(3.05, 5.0)))
    replay = ReplayQueue(clients.deferred("sqs"), settings.replay_queue_url, cipher)
    replayer = Replayer(replay, grants, isv_app_id=lambda: secrets.alipay_config().app_id)
    get_signer = _once(lambda: StateSigner(secrets.state_key(), clock=clock))

    authorization = AuthorizationService(
        settings=settings,
        flow=flow,
        grants=grants,
        signer=get_signer,
        token_api=get_token_api,
        isv_app_id=lambda: secrets.alipay_config().app_id,
        replay=replay,
        clock=clock,
        sleep=sleep,
    )
    notifications = NotificationService(
        tokens=store,
        flow=flow,
        grants=grants,
        alipay_config=secrets.alipay_config,
        publisher=publisher,
        clock=clock,
    )
    refresher = RefreshService(
        settings=settings,
        store=store,
        token_api=new_token_api,
        publisher=publisher,
        policy=refresh_policy,
        clock=clock,
        run_lease=RunLease(table, "refresh", clock=clock),
        replay=replay,
        replayer=replayer,
        sleep=sleep,
    )
    return Container(
        settings=settings,
        store=store,
        flow=flow,
        grants=grants,
        cipher=cipher,
        secrets=secrets,
        publisher=publisher,
        token_api=get_token_api,
        new_token_api=new_token_api,
        authorization=authorization,
        notifications=notifications,
        refresher=refresher,
        replayer=replayer,
        clients=clients,
    )


def _once[T](factory: Callable[[], T]) -> Callable[[], T]:
    """Build on first call (not at cold start), then hand out the same object; thread-safe."""
    lock = threading.Lock()
    built: list[T] = []

    def get() -> T:
        with lock:
            if not built:
                built.append(factory())
            return built[0]

    return get


_container: Container | None = None
_container_lock = threading.Lock()


def get_container() -> Container:
    global _container
    with _container_lock:
        if _container is None:
            _container = build_container(
                Settings.from_env(), refresh_policy=RefreshPolicy.from_env(os.environ)
            )
        return _container


def set_container(container: Container | None) -> None:
    global _container
    with _container_lock:
        _container = container
