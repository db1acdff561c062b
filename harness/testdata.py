"""Where the shared test images live (QR photos and frames): ../shared/testdata beside the repository."""

from __future__ import annotations

from pathlib import Path

SHARED_TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"
