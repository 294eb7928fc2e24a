"""Fixtures for the chaos tests: ``make_world(**emulator_options)`` builds a ``World`` (world.py): the
local stack (DynamoDB Local, moto) provisioned for an emulator of its own, with a shiftable clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app_auth.container import build_container
from sandbox.aws_standins import LocalAws
from sandbox.credentials import DevCredentials
from sandbox.emulator import Emulator
from sandbox.stack import provision
from tests.chaos.world import ShiftableClock, World
from tests.integration.aws_fixtures import aws, local_aws  # noqa: F401 - fixtures


@pytest.fixture
def make_world(aws: LocalAws, creds: DevCredentials, tmp_path: Path) -> Iterator[Callable[..., World]]:  # noqa: F811
    emulators: list[Emulator] = []
    worlds: list[World] = []

    def make(**emulator_options: Any) -> World:
        clock = ShiftableClock()
        emulator = Emulator(clock=clock, seed=20251125, **emulator_options)
        emulator.register_app(creds)
        emulator.start()
        emulators.append(emulator)
        provisioned = provision(
            aws, creds.client_config(emulator.base_url), callback_url="http://127.0.0.1:9/cb"
        )
        container = build_container(provisioned.settings, client=aws.client, sleep=lambda _: None)
        world = World(aws, emulator, clock, creds, container, provisioned.env, tmp_path)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        world.stop_processes()
    for emulator in emulators:
        emulator.stop()


@pytest.fixture(scope="session")
def creds() -> DevCredentials:
    return DevCredentials.generate()
