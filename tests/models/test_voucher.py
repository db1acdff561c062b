"""Our voucher codes: a gate holding the site's voucher key tells one of ours from a code that never was."""

from __future__ import annotations

import pytest

from models.credential import PlainCode, could_be_credential, parse
from models.voucher import (
    ALPHABET,
    CODE_CHARS,
    load_voucher_key,
    looks_like_ours,
    make_code,
    site_voucher_key,
    voucher_key_text,
)

MASTER = bytes(range(32))
NANSHAN = site_voucher_key(MASTER, "nanshan")


def test_a_code_we_made_looks_like_ours_and_parses_as_a_plain_code() -> None:
    code = make_code("nanshan", "douyin", 63, NANSHAN)
    assert code.startswith("DYNA000001Z") and len(code) == CODE_CHARS
    assert looks_like_ours(code, NANSHAN)
    assert parse(code, {}) == PlainCode(code) and could_be_credential(code)


@pytest.mark.parametrize("channel", ["douyin", "meituan", "ctrip", "lebingxue", "other"])
def test_every_channel_and_many_serials_round_trip(channel: str) -> None:
    codes = {make_code("nanshan", channel, serial, NANSHAN) for serial in (1, 2, 31, 32, 10**6, 32**7 - 1)}
    assert len(codes) == 6
    assert all(looks_like_ours(code, NANSHAN) for code in codes)


def test_any_changed_character_fails_the_check() -> None:
    code = make_code("nanshan", "meituan", 123456, NANSHAN)
    for i, original in enumerate(code):
        for other in ALPHABET:
            if other != original:
                changed = code[:i] + other + code[i + 1 :]
                assert not looks_like_ours(changed, NANSHAN), changed


def test_another_sites_key_or_master_does_not_know_the_code() -> None:
    code = make_code("nanshan", "ctrip", 77, NANSHAN)
    assert not looks_like_ours(code, site_voucher_key(MASTER, "wanlong"))
    assert not looks_like_ours(code, site_voucher_key(bytes(32), "nanshan"))


@pytest.mark.parametrize(
    "code",
    [
        pytest.param("", id="empty"),
        pytest.param("VOUCHER-1001", id="a platform's own code"),
        pytest.param("dyna000001z5xdneb", id="lower case"),
        pytest.param("ZZNA000001Z5XDNEB", id="unknown channel"),
        pytest.param("DYNA000001Z5XDNEBX", id="too long"),
        pytest.param("DYNA0000O1Z5XDNEB", id="a letter O"),
    ],
)
def test_other_shapes_are_not_ours(code: str) -> None:
    assert not looks_like_ours(code, NANSHAN)


def test_make_code_refuses_what_it_cannot_spell() -> None:
    with pytest.raises(ValueError, match="channel"):
        make_code("nanshan", "taobao", 1, NANSHAN)
    with pytest.raises(ValueError, match="serial"):
        make_code("nanshan", "douyin", 32**7, NANSHAN)
    with pytest.raises(ValueError, match="serial"):
        make_code("nanshan", "douyin", 0, NANSHAN)


def test_a_site_key_travels_as_base64_text() -> None:
    assert load_voucher_key(voucher_key_text(NANSHAN) + "\n") == NANSHAN
    assert site_voucher_key(MASTER, "wanlong") != NANSHAN
    with pytest.raises(ValueError):
        load_voucher_key("c2hvcnQ=")
    with pytest.raises(ValueError):
        site_voucher_key(b"short", "nanshan")
