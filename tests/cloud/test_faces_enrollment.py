"""Enrollment with the real encoder (dlib through drivers.face) on the shared real photos: one usable face is
enrolled and reaches the site's gates; every other photo is refused with its own code."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
from fastapi import FastAPI

from cloud.deps import Role
from harness.api import Api
from harness.keys import FACE_KEY
from harness.testdata import SHARED_TESTDATA
from models.face import site_face_key, template_aad, unpack_encoding, unseal
from models.sync import FaceUpsert
from tests.cloud.faces_kit import feed, season_holder

FACES = SHARED_TESTDATA / "faces"


def _no_face() -> bytes:
    ramp = np.tile(np.linspace(30, 220, 640, dtype=np.uint8), (480, 1))
    ok, jpeg = cv2.imencode(".jpg", cv2.merge([ramp, ramp, ramp]))
    assert ok
    return bytes(jpeg)


def _upload(api: Api, app: FastAPI, site_id: int, photo: bytes) -> Any:
    holder = season_holder(app, api, site_id)
    me = api.as_(Role.CUSTOMER)
    assert me.post(f"{holder.me}/consent", json={"text_version": "2026-12"}).status_code == 201
    return me.put(holder.me, files={"photo": ("photo", photo, "application/octet-stream")})


def test_obamas_photo_is_enrolled_and_his_gates_get_a_real_encoding(
    app: FastAPI, api: Api, site: dict[str, Any]
) -> None:
    r = _upload(api, app, site["id"], (FACES / "obama.jpg").read_bytes())
    assert r.status_code == 200, r.text
    assert r.json()["face_px"] >= 120  # the enrollment gate's minimum
    [(_, body)] = feed(app, site["id"], "face")
    upsert = FaceUpsert.model_validate(body)
    assert upsert.sealed is not None
    aad = template_aad("nanshan", upsert.ticket_id, upsert.holder_id)
    encoding = np.array(unpack_encoding(unseal(site_face_key(FACE_KEY, "nanshan"), upsert.sealed, aad)))
    assert encoding.shape == (128,) and 0.5 < float(np.linalg.norm(encoding)) < 2.0


@pytest.mark.parametrize(
    ("photo", "code"),
    [
        pytest.param(_no_face, "no_face", id="no-face"),
        pytest.param(lambda: (FACES / "two_people.jpg").read_bytes(), "several_faces", id="two-people"),
        pytest.param(lambda: b"\xff\xd8 not really a jpeg" * 50, "unreadable_image", id="garbage"),
        pytest.param(lambda: b"\xff" * (5 * 1024 * 1024 + 1), "file_too_large", id="over-5-mib"),
    ],
)
def test_a_photo_that_cannot_be_enrolled_says_why(
    app: FastAPI, api: Api, site: dict[str, Any], photo: Any, code: str
) -> None:
    r = _upload(api, app, site["id"], photo())
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["message"] and error["message_zh"]
    assert feed(app, site["id"], "face") == []
