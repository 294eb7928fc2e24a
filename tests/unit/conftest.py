from pathlib import Path

import pytest

from sandbox.credentials import DevCredentials

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def creds() -> DevCredentials:
    return DevCredentials.generate()


@pytest.fixture(scope="session")
def golden_key_pem() -> str:
    return (DATA / "golden_app_key.pem").read_text()
