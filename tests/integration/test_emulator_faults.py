"""Injected faults, the client error each one becomes, and the client's retry rules around them."""

from __future__ import annotations

import threading

import pytest

from alipay_v3 import (
    AlipayApiError,
    AlipayConfig,
    ResponseVerificationError,
    TokenApi,
    TransportError,
    UnknownAlipayCertError,
)
from sandbox.emulator import Emulator, Fault
from sandbox.emulator.faults import FaultPlan


class Sleeps(list[float]):
    """Records the client's backoff sleeps instead of sleeping: one entry per retry."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def exchange_fails(tokens: TokenApi, code: str, error_type: type[Exception]) -> Exception:
    with pytest.raises(error_type) as caught:
        tokens.exchange_code(code)
    return caught.value


# --- responses the client must refuse ------------------------------------------------------------


@pytest.mark.parametrize(
    "fault", [Fault.TAMPER_BODY, Fault.TAMPER_SIGNATURE, Fault.MISSING_SIGNATURE, Fault.OTHER_KEY]
)
@pytest.mark.parametrize("cert_mode", [False, True], ids=["key", "cert"])
def test_spoiled_response_is_refused_and_the_code_is_spent(emulator, make_client, creds, fault, cert_mode):
    tokens = TokenApi(make_client(cert_mode=cert_mode))
    code = emulator.issue_code(creds.app_id)
    emulator.inject(fault)

    error = exchange_fails(tokens, code, ResponseVerificationError)

    assert not isinstance(error, UnknownAlipayCertError)
    # Alipay acted before the answer was spoiled: the code is gone (protocol notes, surprise 8).
    spent = exchange_fails(tokens, code, AlipayApiError)
    assert isinstance(spent, AlipayApiError) and spent.code == "AUTH_CODE_NOT_VALID"


def test_tampered_encrypted_response_is_refused(emulator, make_client, creds):
    tokens = TokenApi(make_client(cert_mode=True, aes=True))
    emulator.inject(Fault.TAMPER_BODY)

    with pytest.raises(ResponseVerificationError):
        tokens.exchange_code(emulator.issue_code(creds.app_id), encrypt=True)


def test_wrong_sn_in_certificate_mode_names_the_unknown_certificate(emulator, make_client, creds):
    tokens = TokenApi(make_client(cert_mode=True))
    emulator.inject(Fault.WRONG_SN)

    error = exchange_fails(tokens, emulator.issue_code(creds.app_id), UnknownAlipayCertError)

    assert isinstance(error, UnknownAlipayCertError) and len(error.sn) == 32


def test_wrong_sn_is_ignored_in_public_key_mode(emulator, tokens, creds):
    emulator.inject(Fault.WRONG_SN)

    assert tokens.exchange_code(emulator.issue_code(creds.app_id)).primary.app_auth_token


def test_signed_business_error_without_its_signature_is_unverified(emulator, tokens):
    emulator.inject(Fault.MISSING_SIGNATURE)

    error = exchange_fails(tokens, "z" * 32, AlipayApiError)

    assert isinstance(error, AlipayApiError)
    assert error.code == "AUTH_CODE_NOT_EXIST" and not error.verified


def test_latency_delays_but_does_not_break(emulator, tokens, creds):
    emulator.inject(Fault.LATENCY, delay=0.05, rate=1.0)

    assert tokens.exchange_code(emulator.issue_code(creds.app_id)).primary.app_auth_token


# --- failures before or after processing, and what the client retries ----------------------------


def test_http_500_on_exchange_is_not_retried_and_the_code_survives(emulator, make_client, creds, sleeps):
    tokens = TokenApi(make_client(sleep=sleeps))
    code = emulator.issue_code(creds.app_id)
    emulator.inject(Fault.HTTP_500)

    error = exchange_fails(tokens, code, AlipayApiError)

    assert isinstance(error, AlipayApiError)
    assert (error.http_status, error.verified, error.retryable) == (500, False, True)
    assert sleeps == []
    assert tokens.exchange_code(code).primary.app_auth_token  # the 500 came before processing


def test_502_after_processing_on_exchange_surfaces_and_the_code_is_spent(
    emulator, make_client, creds, sleeps
):
    tokens = TokenApi(make_client(sleep=sleeps))
    code = emulator.issue_code(creds.app_id)
    emulator.inject(Fault.HTTP_502_AFTER_PROCESSING)

    error = exchange_fails(tokens, code, AlipayApiError)

    # A retry would have answered AUTH_CODE_NOT_VALID: seeing the 502 proves there was none.
    assert isinstance(error, AlipayApiError) and (error.http_status, error.verified) == (502, False)
    assert sleeps == []
    spent = exchange_fails(tokens, code, AlipayApiError)
    assert isinstance(spent, AlipayApiError) and spent.code == "AUTH_CODE_NOT_VALID"


@pytest.mark.parametrize(
    ("inject", "code_survives"),
    [
        ({"fault": Fault.DROP_CONNECTION}, True),
        ({"fault": Fault.DROP_AFTER_PROCESSING}, False),
        ({"fault": Fault.DROP_CONNECTION, "after_processing": True}, False),
    ],
    ids=["before", "after", "after-flag"],
)
def test_dropped_connection_on_exchange_is_not_retried(
    emulator, make_client, creds, sleeps, inject, code_survives
):
    tokens = TokenApi(make_client(sleep=sleeps))
    code = emulator.issue_code(creds.app_id)
    emulator.inject(**inject)

    error = exchange_fails(tokens, code, TransportError)

    assert isinstance(error, TransportError) and error.request_sent
    assert sleeps == []
    if code_survives:
        assert tokens.exchange_code(code).primary.app_auth_token
    else:
        spent = exchange_fails(tokens, code, AlipayApiError)
        assert isinstance(spent, AlipayApiError) and spent.code == "AUTH_CODE_NOT_VALID"


@pytest.mark.parametrize(
    ("fault", "rotations"),
    [
        (Fault.HTTP_500, 1),
        (Fault.DROP_CONNECTION, 1),
        (Fault.HTTP_502_AFTER_PROCESSING, 2),
        (Fault.DROP_AFTER_PROCESSING, 2),
    ],
)
def test_refresh_is_retried_and_succeeds(emulator, make_client, creds, sleeps, fault, rotations):
    tokens = TokenApi(make_client(sleep=sleeps))
    token = tokens.exchange_code(emulator.issue_code(creds.app_id)).primary
    emulator.inject(fault)

    renewed = tokens.refresh(token.app_refresh_token).primary

    assert len(sleeps) == 1
    # After processing, the first rotation's answer was lost; the retry used the in-grace old token.
    assert emulator.refresh_count(token.auth_app_id) == rotations
    assert emulator.token_valid(renewed.app_auth_token)


def test_refresh_gives_up_after_max_attempts(emulator, make_client, creds, sleeps):
    tokens = TokenApi(make_client(sleep=sleeps, max_attempts=3))
    token = tokens.exchange_code(emulator.issue_code(creds.app_id)).primary
    emulator.inject(Fault.HTTP_500, times=3)

    with pytest.raises(AlipayApiError) as caught:
        tokens.refresh(token.app_refresh_token)

    assert caught.value.http_status == 500 and len(sleeps) == 2
    assert tokens.refresh(token.app_refresh_token).primary.app_auth_token  # the faults are used up


def test_connection_refused_means_not_sent(make_emulator, make_client, creds):
    stopped = make_emulator()
    config = AlipayConfig.from_mapping(creds.client_config(stopped.base_url))
    stopped.stop()
    tokens = TokenApi(make_client(config=config, max_attempts=2))

    error = exchange_fails(tokens, "c" * 32, TransportError)

    assert isinstance(error, TransportError) and not error.request_sent


# --- Alipay rotates its certificate ----------------------------------------------------------------


def test_rotated_alipay_cert_is_picked_up_by_reloading_once(emulator, make_client, creds):
    rotated = emulator.rotate_alipay_cert(creds.app_id)
    reloads: list[int] = []

    def reload_config() -> AlipayConfig:
        reloads.append(1)
        return AlipayConfig.from_mapping(rotated.client_config(emulator.base_url, cert_mode=True))

    tokens = TokenApi(make_client(cert_mode=True, reload_config=reload_config))

    assert tokens.exchange_code(emulator.issue_code(creds.app_id)).primary.app_auth_token
    assert tokens.exchange_code(emulator.issue_code(creds.app_id)).primary.app_auth_token
    assert len(reloads) == 1  # the second call already had the new certificate


def test_reload_that_brings_nothing_new_fails_once(emulator, make_client, creds):
    emulator.rotate_alipay_cert(creds.app_id)
    reloads: list[int] = []

    def stale_reload() -> AlipayConfig:
        reloads.append(1)
        return AlipayConfig.from_mapping(creds.client_config(emulator.base_url, cert_mode=True))

    tokens = TokenApi(make_client(cert_mode=True, reload_config=stale_reload))

    exchange_fails(tokens, emulator.issue_code(creds.app_id), UnknownAlipayCertError)
    assert len(reloads) == 1


def test_rotation_gives_a_new_sn_and_key(emulator, creds):
    rotated = emulator.rotate_alipay_cert(creds.app_id)

    assert rotated.alipay_cert.serial_number != creds.alipay_cert.serial_number
    assert rotated.alipay_key.public_key().public_numbers() != creds.alipay_key.public_key().public_numbers()
    assert rotated.app_id == creds.app_id and rotated.app_key is creds.app_key


def test_rotated_key_breaks_public_key_mode_clients(emulator, tokens, creds):
    emulator.rotate_alipay_cert(creds.app_id)

    exchange_fails(tokens, emulator.issue_code(creds.app_id), ResponseVerificationError)


# --- how faults are armed ---------------------------------------------------------------------------


def test_times_limits_a_fault(emulator, tokens, creds):
    emulator.inject(Fault.OTHER_KEY, times=2)

    for _ in range(2):
        exchange_fails(tokens, emulator.issue_code(creds.app_id), ResponseVerificationError)
    assert tokens.exchange_code(emulator.issue_code(creds.app_id)).primary.app_auth_token


def test_clear_faults(emulator, tokens, creds):
    emulator.inject(Fault.TAMPER_BODY, rate=1.0)
    emulator.clear_faults()

    assert tokens.exchange_code(emulator.issue_code(creds.app_id)).primary.app_auth_token


def test_seeded_rate_is_reproducible():
    def fired(plan: FaultPlan) -> list[bool]:
        return [Fault.HTTP_500 in plan.draw() for _ in range(200)]

    first, second = FaultPlan(seed=7), FaultPlan(seed=7)
    for plan in (first, second):
        plan.inject(Fault.HTTP_500, rate=0.2)

    pattern = fired(first)
    assert pattern == fired(second)
    assert 10 < sum(pattern) < 80  # a fixed seed: this count is the same on every run


def test_rate_with_times_stops_after_times():
    plan = FaultPlan(seed=1)
    plan.inject(Fault.HTTP_500, times=3, rate=0.5)

    assert sum(Fault.HTTP_500 in plan.draw() for _ in range(200)) == 3


def test_bad_injections_are_refused(emulator):
    with pytest.raises(ValueError, match="delay"):
        emulator.inject(Fault.LATENCY)
    with pytest.raises(ValueError, match="rate"):
        emulator.inject(Fault.HTTP_500, rate=1.5)
    with pytest.raises(ValueError, match="after_processing"):
        emulator.inject(Fault.HTTP_500, after_processing=True)


def test_probabilistic_faults_under_concurrency(emulator, make_client, creds):
    """16 clients at once through latency and random 500s: every refresh ends in a valid token."""
    tokens = TokenApi(make_client(max_attempts=8))
    grants = [tokens.exchange_code(emulator.issue_code(creds.app_id)).primary for _ in range(16)]
    emulator.inject(Fault.LATENCY, delay=0.02, rate=1.0)
    emulator.inject(Fault.HTTP_500, rate=0.2)
    results: list[str] = []
    lock = threading.Lock()

    def refresh(refresh_token: str) -> None:
        token = tokens.refresh(refresh_token).primary.app_auth_token
        with lock:
            results.append(token)

    threads = [threading.Thread(target=refresh, args=(grant.app_refresh_token,)) for grant in grants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(results) == 16
    assert all(emulator.token_valid(token) for token in results)
    assert all(emulator.refresh_count(grant.auth_app_id) == 1 for grant in grants)


def test_context_manager_starts_and_stops(creds):
    with Emulator() as emulator:
        emulator.register_app(creds)
        assert emulator.base_url.startswith("http://127.0.0.1:")
    with pytest.raises(RuntimeError, match="not running"):
        _ = emulator.base_url
