"""The technician page in a real headless browser (Debian's Chromium driven by Playwright) against real gates.

A standalone gate daemon in its own process serves the page (break-glass account, never synced): its
scanner a pty, its relay board a pymodbus server on loopback, its camera a video file showing a QR code.
The last test runs a whole resort (cloud, brokers, one gate) to lock a technician out from the cloud.
Screenshots go to test-artifacts/ (git-ignored): look at them after a change to the page.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import pytest
import segno
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from harness.browser import PHONE, Browser, chromium_missing
from harness.gates import GateProcess, RelayBoards
from harness.processes import free_port, wait_until
from harness.relay_sim import RelayBoardSim
from harness.resort import Resort
from harness.tickets import make_ticket, sign
from models import ProductKind
from models.credential import public_key_b64

pytestmark = [pytest.mark.browser, pytest.mark.skipif(chromium_missing() is not None, reason=str(chromium_missing()))]

if TYPE_CHECKING:
    from playwright.sync_api import Page

USER, PASSWORD = "fixer", "break-glass-Пароль-7"
CAMERA_CODE = "NOT-A-TICKET-camera-test"
LOCKOUT_AFTER = 3
LOCKOUT_MIN = 0.1  # 6 s: the login test waits it out


def qr_video(path: Path, text: str, frames: int = 30) -> Path:
    """A video file (MJPG) of a QR code printed on grey paper, as a camera in front of a phone would see it."""
    png = path.with_suffix(".png")
    segno.make(text, error="M", micro=False).save(str(png), scale=8, border=4)
    code = cv2.imread(str(png))
    assert code is not None
    frame = np.full((480, 640, 3), 110, np.uint8)
    h, w = code.shape[:2]
    top, left = (480 - h) // 2, (640 - w) // 2
    frame[top : top + h, left : left + w] = code
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (640, 480))
    for _ in range(frames):
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser(prefix="web-") as b:
        yield b


@pytest.fixture(scope="module")
def board() -> Iterator[RelayBoardSim]:
    boards = RelayBoards()
    try:
        yield boards.add(passage_delay_s=0.3, passage_hold_s=0.3)
    finally:
        boards.close()


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def gate(
    tmp_path_factory: pytest.TempPathFactory, board: RelayBoardSim, key: Ed25519PrivateKey
) -> Iterator[GateProcess]:
    """A gate that has never synced, with its page on loopback and the config's break-glass account."""
    folder = tmp_path_factory.mktemp("gate")
    config: dict[str, Any] = {
        "gate": {"gate_id": "north-1", "site_id": "nanshan", "passback_seconds": 0, "rescan_seconds": 0},
        "barrier": {
            "type": "modbus_tcp",
            "host": "127.0.0.1",
            "port": board.port,
            "passage_input": 0,
            "fire_alarm_input": 1,
            "passage_timeout_s": 5,
        },
        "camera": {"source": str(qr_video(folder / "camera.avi", CAMERA_CODE))},
        "trusted_keys": {1: public_key_b64(key.public_key())},
        "web": {
            "bind": "127.0.0.1",
            "port": free_port(),
            "break_glass": {"username": USER, "password_hash": PasswordHasher().hash(PASSWORD)},
            "lockout_after": LOCKOUT_AFTER,
            "lockout_min": LOCKOUT_MIN,
        },
    }
    process = GateProcess(folder, config)
    try:
        process.start()
        process.wait_page()
        yield process
    finally:
        process.close()


def live_token(key: Ed25519PrivateKey, ticket_id: str) -> str:
    """A signed day ticket valid now (the daemon runs on the wall clock)."""
    now = datetime.now(UTC)
    return sign(
        key,
        make_ticket(
            ProductKind.DAY,
            ticket_id=ticket_id,
            valid_from=now - timedelta(hours=1),
            valid_until=now + timedelta(hours=8),
        ),
    )


def try_login(page: Page, url: str, username: str, password: str) -> None:
    page.goto(f"{url}/login")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("[data-testid=login-form] button[type=submit]")


def logged_in(page: Page, url: str, username: str = USER, password: str = PASSWORD) -> Page:
    """Log in through the form; back on the page once its status and live stream are up."""
    try_login(page, url, username, password)
    page.wait_for_url(f"{url}/")
    page.locator("[data-testid=status] .card").first.wait_for()
    page.locator("#live.good").wait_for()
    return page


def login_error(page: Page) -> str:
    error = page.get_by_test_id("login-error")
    error.wait_for()
    return str(error.get_attribute("data-code"))


def test_login_refuses_a_wrong_password_locks_the_name_out_then_lets_the_technician_in(
    gate: GateProcess, browser: Browser
) -> None:
    page = browser.page()
    page.goto(gate.web_url + "/")
    page.wait_for_url(f"{gate.web_url}/login")  # no session: the page sends the technician to log in

    for _ in range(LOCKOUT_AFTER - 1):
        try_login(page, gate.web_url, USER, "wrong password")
        assert login_error(page) == "bad_login"
    try_login(page, gate.web_url, USER, "wrong again")
    assert login_error(page) == "locked_out"  # the failure that starts the lockout says so
    try_login(page, gate.web_url, USER, PASSWORD)
    assert login_error(page) == "locked_out"  # locked even with the right password
    browser.shot(page, "login-locked-out")

    def lets_in() -> bool:
        try_login(page, gate.web_url, USER, PASSWORD)
        page.wait_for_function(
            "() => location.pathname === '/' || !document.querySelector('[data-testid=login-error]').hidden"
        )
        return page.url == f"{gate.web_url}/"

    wait_until(lets_in, "the lockout ended", LOCKOUT_MIN * 60 + 15, interval=1.0)
    page.locator("[data-testid=status] .card").first.wait_for()
    assert page.locator("#who").text_content() == USER


def test_a_ticket_scanned_at_the_serial_scanner_appears_live_and_then_as_passed(
    gate: GateProcess, browser: Browser, key: Ed25519PrivateKey
) -> None:
    page = logged_in(browser.page(), gate.web_url)
    rows = page.get_by_test_id("decision-row")
    before = rows.count()

    gate.scan(live_token(key, "7001"))
    admitted = page.locator("[data-testid=decision-row][data-outcome=admit]").filter(has_text="7001")
    admitted.wait_for()
    assert admitted.locator(".kind").text_content() == "串口"
    page.wait_for_function(  # the same row, replaced when the skier passed the sensor
        "() => [...document.querySelectorAll('[data-testid=decision-row]')].some("
        "r => r.textContent.includes('7001') && r.textContent.includes('已通过'))"
    )
    denied = page.locator("[data-testid=decision-row][data-outcome=deny]")
    denials = denied.count()
    gate.scan("NOT-A-TICKET-0001")
    page.wait_for_function(
        f"() => document.querySelectorAll('[data-testid=decision-row][data-outcome=deny]').length > {denials}"
    )
    assert rows.count() == before + 2  # one row per decision: the passage replaced its admission's row
    browser.shot(page, "decisions-live")


def test_the_camera_view_shows_the_frame_with_a_box_around_the_qr_code(gate: GateProcess, browser: Browser) -> None:
    page = logged_in(browser.page(), gate.web_url)
    image = page.get_by_test_id("camera-img")
    image.scroll_into_view_if_needed()
    page.wait_for_function(
        "() => { const i = document.querySelector('[data-testid=camera-img]');"
        " return !i.hidden && i.complete && i.naturalWidth > 0; }"
    )
    shown = cv2.imdecode(np.frombuffer(image.screenshot(), np.uint8), cv2.IMREAD_COLOR)
    assert shown is not None
    b, g, r = (shown[:, :, i].astype(int) for i in range(3))
    green = (g > 150) & (r < 90) & (b < 90)  # the box (the frame itself is grey, black and white)
    assert green.sum() > 300, f"{green.sum()} green pixels"
    browser.shot(page, "camera")


def test_a_test_open_pulses_the_relay_board_and_lands_in_the_journal_with_its_justification(
    gate: GateProcess, browser: Browser, board: RelayBoardSim
) -> None:
    page = logged_in(browser.page(), gate.web_url)
    opened, passed = board.open_count, board.passage_count
    why = "turnstile arm replaced, checking the coil"

    page.get_by_test_id("action-test-open").click()
    page.get_by_test_id("justification").fill("ok")
    page.get_by_test_id("action-confirm").click()
    assert page.locator("#justification-hint").is_visible()  # too short: nothing is sent
    page.get_by_test_id("justification").fill(why)
    page.get_by_test_id("action-confirm").click()
    result = page.locator("[data-testid=action-result].good")
    result.wait_for(timeout=20_000)
    assert result.get_attribute("data-code") == "done"
    assert (board.open_count, board.passage_count) == (opened + 1, passed + 1)

    page.locator("[data-testid=journal-search] button[type=submit]").click()
    action = page.locator("[data-testid=journal-action][data-action=test_open]").filter(has_text=why)
    action.wait_for()
    assert USER in str(action.text_content())
    action.scroll_into_view_if_needed()
    browser.shot(page, "test-open-journal")


def test_the_page_fits_a_phone_screen(gate: GateProcess, browser: Browser) -> None:
    page = browser.page(width=PHONE[0], height=PHONE[1])
    refused: list[str] = []  # what the page's Content-Security-Policy blocked (an inline style, a script...)
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    try_login(page, gate.web_url, USER, "wrong password")
    login_error(page)
    browser.shot(page, "phone-login", full_page=False)
    logged_in(page, gate.web_url)
    page.get_by_test_id("decision-row").first.wait_for()
    page.locator("[data-testid=config] li").first.wait_for()
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE[0]  # nothing wider than the screen
    browser.shot(page, "phone-zh")
    page.get_by_test_id("lang-toggle").click()
    assert page.locator("h2").first.text_content() == "Status"
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE[0]
    browser.shot(page, "phone-en")
    assert refused == []


def test_a_technician_disabled_in_the_cloud_loses_the_page_after_the_gates_sync(
    tmp_path: Path, browser: Browser
) -> None:
    with Resort(tmp_path, gates=(("north-1", "北门1号"),), web=True) as resort:
        url = resort.page_url("north-1")
        staff = resort.api.admin.post(
            "/api/v1/staff", json={"username": "li.tech", "password": "Snow-Tech-2026!", "role": "gate_tech"}
        )
        assert staff.status_code == 201, staff.text
        page = browser.page()

        def lets_in() -> bool:  # once the technician list reached the gate
            try_login(page, url, "li.tech", "Snow-Tech-2026!")
            page.wait_for_function(
                "() => location.pathname === '/' || !document.querySelector('[data-testid=login-error]').hidden"
            )
            return page.url == f"{url}/"

        wait_until(lets_in, "the cloud's technician logs in at the gate", 30, interval=0.5)
        page.locator("[data-testid=status] .card").first.wait_for()
        browser.shot(page, "resort-technician")

        disabled = resort.api.admin.patch(f"/api/v1/staff/{staff.json()['id']}", json={"active": False})
        assert disabled.status_code == 200, disabled.text
        page.wait_for_url(f"{url}/login", timeout=30_000)  # the open page is sent back to log in
        try_login(page, url, "li.tech", "Snow-Tech-2026!")
        assert login_error(page) == "bad_login"
