"""The admin page in a real headless browser (Debian's Chromium, installed by scripts/browser.sh), against the
local runtime started as the README says (a separate process; visibility timeout 1 s so failed jobs reach the
DLQ in seconds).

A job lands in the DLQ for real: the WhatsApp sandbox rejects the access token (HTTP 401, code 190), the
sender halts and raises, and after 3 receives SQS moves the message to the DLQ. The operator then fixes the
cause (the fault is cleared), opens /admin/queues, signs in with the admin token, clicks "Retry" on the DLQ
message, and sees it processed: the reply reaches WhatsApp and the page shows an empty DLQ.

Screenshots go to a temporary folder (or to $ADMIN_UI_SCREENSHOTS)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.helpers import runtime_process
from tests.harness import eventually

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
API_TOKEN = "local-api-token"
ADMIN_TOKEN = "local-admin-token"
PARTICIPANT = "6281311112222"

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    message = f"{CHROMIUM} and {CHROMEDRIVER} are needed (scripts/browser.sh installs them)"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)

from selenium import webdriver  # noqa: E402 - only once the browser is known to be there
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


class System:
    def __init__(self, api: str, sandbox: str) -> None:
        self.api, self.sandbox = api, sandbox
        self.http = httpx.Client(timeout=30)

    def admin(self, path: str) -> Any:
        response = self.http.get(self.api + path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert response.status_code == 200, response.text
        return response.json()

    def dlq_depth(self, queue: str = "notifications") -> int:
        queues = {q["name"]: q for q in self.admin("/admin/api/queues")["queues"]}
        return queues[queue]["dlq"]["visible"]

    def messages_to(self, phone: str) -> list[dict]:
        messages = self.http.get(self.sandbox + "/_sandbox/messages").json()["messages"]
        return [m for m in messages if m["to"] == phone]


@pytest.fixture(scope="module")
def system() -> Iterator[System]:
    with runtime_process("--visibility-timeout", "1") as (urls, banner):
        assert "/admin/queues" in banner, banner
        yield System(urls["api"], urls["sandbox"])


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    profile = tempfile.mkdtemp(prefix="jastipin-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    # An explicit driver path: Selenium Manager (which would look for and download drivers) never runs.
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("ADMIN_UI_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("admin-ui")
    path.mkdir(parents=True, exist_ok=True)
    return path


def find(driver: WebDriver, css: str, timeout: float = 20) -> Any:
    return WebDriverWait(driver, timeout).until(
        lambda d: next((e for e in d.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()), False),
        message=f"no visible {css}",
    )


def sign_in(driver: WebDriver, token: str) -> None:
    field = find(driver, "#token")
    field.clear()
    field.send_keys(token)
    find(driver, "#sign-in").click()


def test_retry_a_dlq_message_from_the_admin_page(system: System, browser: WebDriver, screenshots: Path):
    # 1. WhatsApp rejects our token; a participant joins; the reply job fails 3 times and lands in the DLQ.
    fault = {"to": None, "times": None, "http_status": 401, "code": 190, "message": "token expired"}
    assert system.http.post(system.sandbox + "/_sandbox/faults", json=fault).is_success
    created = system.http.post(
        system.api + "/api/trips",
        json={"slug": "jpn25", "title": "Jastip Jepang", "owner_phone": "081234567890"},
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )
    assert created.status_code == 201, created.text
    joined = system.http.post(
        system.sandbox + "/_sandbox/inbound", json={"from": PARTICIPANT, "text": "JOIN jpn25", "name": "Ani"}
    )
    assert joined.json() == {"webhook_status": 200}
    eventually(lambda: system.dlq_depth() == 1, timeout=60, what="the reply job in the notifications DLQ")
    assert system.messages_to(PARTICIPANT) == []

    # 2. The operator fixes the cause (here: the fault goes away).
    assert system.http.delete(system.sandbox + "/_sandbox/faults").is_success

    # 3. The page asks for the admin token; a wrong one is refused.
    browser.get(system.api + "/admin/queues")
    assert browser.title == "Jastipin · Queues"
    sign_in(browser, API_TOKEN)  # the backend's token is not the admin token
    assert "rejected" in find(browser, "#login-error").text
    browser.save_screenshot(str(screenshots / "0-sign-in-refused.png"))
    sign_in(browser, ADMIN_TOKEN)

    # 4. The DLQ shows the job (what and for which trip, not who or what it says).
    row = find(browser, "[data-dlq=notifications] tr[data-message-id]")
    cells = [c.text for c in row.find_elements(By.TAG_NAME, "td")]
    assert cells[0].startswith("rpl_") and cells[1:5] == ["auto_reply", "auto_reply", "jpn25", "1"]
    assert find(browser, "[data-testid=dlq-count-notifications]").text == "1"
    page = browser.page_source
    assert PARTICIPANT not in page and "Terima kasih" not in page and "Ani" not in page
    browser.save_screenshot(str(screenshots / "1-dlq-with-failed-job.png"))

    # 5. Retry: the job goes back to its queue, the sender delivers it, the DLQ is empty.
    row.find_element(By.CSS_SELECTOR, "button.retry").click()
    (reply,) = eventually(lambda: system.messages_to(PARTICIPANT), timeout=30, what="the reply in WhatsApp")
    assert reply["body"]["text"]["body"].startswith("Terima kasih sudah join!")
    WebDriverWait(browser, 20).until(
        lambda d: (
            d.find_elements(By.CSS_SELECTOR, "[data-testid=dlqs-empty]")
            and d.find_element(By.CSS_SELECTOR, "[data-testid=dlq-count-notifications]").text == "0"
        ),
        message="the page never showed an empty DLQ",
    )
    assert system.dlq_depth() == 0

    # 6. Recent outcomes of the trip: the participant's entry is now sent (or delivered), by pseudonymous id.
    find(browser, "#trip-id").send_keys("jpn25")
    browser.find_element(By.CSS_SELECTOR, "#trip-status option[value='']").click()
    find(browser, "#trip-show").click()
    status = find(browser, "#outcomes .status")
    assert status.text in {"sent", "delivered", "read"}
    assert PARTICIPANT not in browser.page_source
    browser.save_screenshot(str(screenshots / "2-after-retry.png"))
