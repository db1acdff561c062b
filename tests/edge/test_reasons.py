"""Every reason code reads as a sentence in both languages; an unknown one says it is unknown."""

from __future__ import annotations

import pytest

from edge.reasons import CATALOG, Reason, reason


def test_every_reason_has_its_sentence_in_chinese_and_english() -> None:
    assert set(CATALOG) == set(Reason)
    for code in Reason:
        assert CATALOG[code]["zh"] and CATALOG[code]["en"], code
        assert reason(code, "zh") != code.value and reason(code, "en") != code.value


@pytest.mark.parametrize("code", list(Reason), ids=str)
def test_a_code_read_back_from_a_journal_as_text_gets_its_sentence(code: Reason) -> None:
    assert reason(str(code.value), "zh") == CATALOG[code]["zh"]


def test_the_codes_keep_their_wire_spelling() -> None:
    assert Reason.OK == "ok" and Reason.USED_UP == "used_up" and f"{Reason.PASSBACK}" == "passback"


@pytest.mark.parametrize(
    ("lang", "shown"),
    [
        pytest.param("en", "Unknown reason (code from_a_newer_gate)", id="en"),
        pytest.param("zh", "未知原因（代码 from_a_newer_gate）", id="zh"),
    ],
)
def test_a_code_this_version_does_not_know_is_shown_as_unknown_with_the_code(lang: str, shown: str) -> None:
    assert reason("from_a_newer_gate", lang) == shown  # type: ignore[arg-type]
