"""A real headless browser for the technician page's tests: Debian's Chromium driven by Playwright for Python.

Playwright's own browser download cannot work on these machines (no internet for it), so the browser
is the one apt installs (`/usr/bin/chromium`, `executable_path`). Screenshots go to `test-artifacts/`
at the repository root (git-ignored) for a person to look at.

    with Browser() as browser:
        page = browser.page(width=360, height=740)
        page.goto(url); ...
        browser.shot(page, "login-phone")
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from harness.processes import REPO

if TYPE_CHECKING:
    from playwright.sync_api import Browser as PwBrowser
    from playwright.sync_api import BrowserContext, Page, Playwright

CHROMIUM = Path(os.environ.get("STARFISH_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = REPO / "test-artifacts"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = (360, 740)
LAPTOP = (1280, 900)


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here (for a skip), or None."""
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (apt install chromium, as the Makefile does)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright (Python) is not installed: uv sync --group dev"
    return None


class Browser:
    """One headless Chromium; `page()` opens a fresh context (own cookies) per call; `close` ends them all."""

    def __init__(self, *, artifacts: Path = ARTIFACTS, prefix: str = "") -> None:
        self.artifacts = artifacts
        self.prefix = prefix
        self._pw: Playwright | None = None
        self._browser: PwBrowser | None = None
        self._contexts: list[BrowserContext] = []

    def start(self) -> Self:
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        try:
            self._browser = self._pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def page(self, *, width: int = LAPTOP[0], height: int = LAPTOP[1], timeout_ms: float = 15_000) -> Page:
        """A new page in a new context (a fresh cookie jar, as another technician's browser)."""
        assert self._browser is not None, "Browser not started"
        context = self._browser.new_context(
            viewport={"width": width, "height": height}, locale="zh-CN", ignore_https_errors=True
        )
        context.set_default_timeout(timeout_ms)
        self._contexts.append(context)
        return context.new_page()

    def shot(self, page: Page, name: str, *, full_page: bool = True) -> Path:
        """Save a screenshot as test-artifacts/<prefix><name>.png and return its path."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        if full_page:
            page.evaluate("window.scrollTo(0, 0)")  # else a sticky bar shows where the page was scrolled to
        path = self.artifacts / f"{self.prefix}{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path

    def close(self) -> None:
        for context in self._contexts:
            with contextlib.suppress(Exception):  # the browser may already be gone
                context.close()
        self._contexts.clear()
        if self._browser is not None:
            with contextlib.suppress(Exception):
                self._browser.close()
            self._browser = None
        if self._pw is not None:
            self._pw.stop()
            self._pw = None
