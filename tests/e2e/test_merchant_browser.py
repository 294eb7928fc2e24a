"""A merchant in a real browser: our link, Alipay's (the emulator's) consent page, our callback pages.

Headless Chromium on a phone-sized window clicks through the whole authorization against the
local stack; screenshots go to $E2E_SCREENSHOT_DIR (or a temporary directory) for a person to see.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlencode

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from tests.integration.stack_fixtures import Stack

pytestmark = pytest.mark.e2e

MERCHANT = "2021004200000042"
PHONE = (390, 844)
DESKTOP = (1280, 800)
WAIT_SECONDS = 15


def wait_for_outcome(browser: WebDriver, url_prefix: str) -> WebElement:
    """The page's card, once the browser has arrived at a page under ``url_prefix``."""
    WebDriverWait(browser, WAIT_SECONDS).until(EC.url_contains(url_prefix))
    return WebDriverWait(browser, WAIT_SECONDS).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, "[data-outcome]"))
    )


def headings(browser: WebDriver) -> list[str]:
    return [h.text for h in browser.find_elements(By.TAG_NAME, "h1")]


def response_headers(browser: WebDriver, url_prefix: str) -> dict[str, str]:
    """The headers of the last response the browser received for a URL under ``url_prefix``."""
    found: dict[str, str] = {}
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") != "Network.responseReceived":
            continue
        response = message["params"]["response"]
        if response["url"].startswith(url_prefix):
            found = {name.lower(): value for name, value in response["headers"].items()}
    return found


def csp_violations(browser: WebDriver) -> list[str]:
    return [e["message"] for e in browser.get_log("browser") if "Content Security Policy" in e["message"]]


def fits_the_window(browser: WebDriver) -> bool:
    """Nothing wider than the window: no sideways scrolling on a phone."""
    return bool(browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth"))


def shoot(browser: WebDriver, directory: Path, name: str, size: tuple[int, int]) -> Path:
    browser.set_window_size(*size)
    path = directory / f"{name}-{size[0]}x{size[1]}.png"
    assert browser.save_screenshot(str(path)), path
    return path


@pytest.fixture(autouse=True)
def phone_window(browser: WebDriver) -> None:
    browser.set_window_size(*PHONE)
    browser.get_log("performance")  # start each test with empty logs
    browser.get_log("browser")


def test_merchant_authorizes_from_the_link(
    browser_stack: Stack, browser: WebDriver, screenshots: Path
) -> None:
    stack = browser_stack
    link = stack.create_link("customer-42")
    assert link.startswith(stack.emulator.consent_page_url + "?")

    # The merchant opens the link: Alipay's consent page names the ISV app
    browser.get(link)
    card = wait_for_outcome(browser, stack.emulator.consent_page_url)
    assert card.get_attribute("data-outcome") == "consent"
    assert stack.creds.app_id in card.text
    assert fits_the_window(browser)
    shoot(browser, screenshots, "consent", PHONE)
    browser.set_window_size(*PHONE)

    # and authorizes the merchant app it typed in
    field = browser.find_element(By.ID, "merchant_app_id")
    field.clear()
    field.send_keys(MERCHANT)
    browser.find_element(By.ID, "authorize").click()

    # Then our success page, in Chinese and English, without any secret on it
    card = wait_for_outcome(browser, f"{stack.url}/callback")
    assert card.get_attribute("data-outcome") == "authorized"
    assert headings(browser) == ["授权成功", "Authorization complete"]
    assert MERCHANT in card.text
    token = stack.http.get(f"{stack.url}/tokens/{MERCHANT}", timeout=10).json()
    assert token["isv_ref"] == "customer-42"
    code = browser.current_url.split("app_auth_code=")[1].split("&")[0]
    document = browser.find_element(By.TAG_NAME, "html").get_attribute("outerHTML") or ""
    assert token["app_auth_token"] not in document and code not in document
    # served with our CSP, which lets the page's own stylesheet apply and nothing break
    headers = response_headers(browser, f"{stack.url}/callback")
    assert headers["content-security-policy"].startswith("default-src 'none'")
    background = browser.execute_script("return getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(245, 246, 248)"
    assert csp_violations(browser) == []
    assert fits_the_window(browser)
    shoot(browser, screenshots, "authorized", PHONE)
    shoot(browser, screenshots, "authorized", DESKTOP)
    assert stack.emulator.token_calls == 1  # one exchange (and the scope's query)

    # A reload shows the same success, answered from the record: no second exchange
    browser.set_window_size(*PHONE)
    browser.refresh()
    card = wait_for_outcome(browser, f"{stack.url}/callback")
    assert card.get_attribute("data-outcome") == "authorized"
    assert stack.emulator.token_calls == 1


def test_a_forged_state_gets_the_state_rejected_page(
    browser_stack: Stack, browser: WebDriver, screenshots: Path
) -> None:
    stack = browser_stack
    query = {
        "app_id": stack.creds.app_id,
        "source": "alipay_app_auth",
        "app_auth_code": "P1798b23682e34d96859afa000000003",
        "state": "v1.forged.9999999999.AAAAAAAAAAAAAAAAAAAAAA",
    }
    browser.get(f"{stack.url}/callback?{urlencode(query)}")

    card = wait_for_outcome(browser, f"{stack.url}/callback")
    assert card.get_attribute("data-outcome") == "state_rejected"
    assert headings(browser) == ["授权链接已失效", "This authorization link is no longer valid"]
    assert fits_the_window(browser) and csp_violations(browser) == []
    shoot(browser, screenshots, "state-rejected", PHONE)
    assert stack.emulator.requests_received == 0


def test_a_spent_code_page_leads_back_to_the_consent_page(
    browser_stack: Stack, browser: WebDriver, screenshots: Path
) -> None:
    stack = browser_stack
    params = stack.consent(stack.create_link("c-1"))
    stack.container.token_api().exchange_code(params["app_auth_code"])  # spent elsewhere

    browser.get(f"{stack.url}/callback?{urlencode(params)}")
    card = wait_for_outcome(browser, f"{stack.url}/callback")
    assert card.get_attribute("data-outcome") == "code_spent"
    assert headings(browser) == ["授权码已失效", "This authorization has expired"]
    assert fits_the_window(browser)
    shoot(browser, screenshots, "code-spent", PHONE)
    browser.set_window_size(*PHONE)

    # "Authorize again" is a fresh link: to the consent page, and through it to success
    again = browser.find_element(By.PARTIAL_LINK_TEXT, "Authorize again")
    assert (again.get_attribute("href") or "").startswith(stack.emulator.consent_page_url + "?")
    again.click()
    card = wait_for_outcome(browser, stack.emulator.consent_page_url)
    assert card.get_attribute("data-outcome") == "consent"
    browser.find_element(By.ID, "authorize").click()
    card = wait_for_outcome(browser, f"{stack.url}/callback")
    assert card.get_attribute("data-outcome") == "authorized"
    [token] = [i for i in stack.table_items() if i["sk"]["S"] == "TOKEN"]
    assert token["isv_ref"]["S"] == "c-1"


def test_declining_stays_on_alipay(browser_stack: Stack, browser: WebDriver, screenshots: Path) -> None:
    stack = browser_stack
    browser.get(stack.create_link())
    wait_for_outcome(browser, stack.emulator.consent_page_url)
    browser.find_element(By.ID, "decline").click()

    WebDriverWait(browser, WAIT_SECONDS).until(
        EC.presence_of_element_located((By.CSS_SELECTOR, '[data-outcome="declined"]'))
    )
    assert headings(browser) == ["您已拒绝授权", "You declined the authorization"]
    shoot(browser, screenshots, "declined", PHONE)
    assert stack.emulator.requests_received == 0
    assert not [i for i in stack.table_items() if i["sk"]["S"] == "TOKEN"]
