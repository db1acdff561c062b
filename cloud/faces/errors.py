"""Face admission's errors: a stable code, English and Chinese, details; enrollment refusals are HTTP 422."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cloud.errors import Conflict, DomainError


def _enrollment_text(code: str, details: Mapping[str, Any]) -> tuple[str, str]:
    if code == "face_too_small":
        px = details.get("min_face_px", "?")
        return (
            f"The face is too small: it must be at least {px} pixels wide in the photo; "
            "come closer or use a larger photo",
            f"照片中的人脸太小：宽度至少需要 {px} 像素，请靠近一些或使用更大的照片",
        )
    if code == "file_too_large":
        mib = int(details.get("max_bytes", 0)) // (1024 * 1024)
        return f"The photo is larger than {mib} MiB", f"照片超过 {mib} MiB"
    return _TEXT.get(code, ("The photo cannot be enrolled", "该照片无法用于人脸登记"))


_TEXT = {
    "unreadable_image": (
        "The file is not an image we can read (JPEG, PNG or WebP)",
        "无法读取该图片（请使用 JPEG、PNG 或 WebP）",
    ),
    "no_face": ("No face was found in the photo", "照片中未检测到人脸"),
    "several_faces": (
        "The photo shows several faces of similar size; it must show only the holder",
        "照片中有多张大小相近的人脸，请只拍摄持卡人本人",
    ),
    "blurry": ("The photo is blurry; hold still and take it again", "照片模糊，请保持稳定后重新拍摄"),
    "too_dark": ("The face is too dark; find more light", "人脸过暗，请在光线充足处拍摄"),
    "too_bright": ("The face is too bright; avoid direct light", "人脸过亮，请避免强光直射"),
    "head_turned": ("The head is turned; look straight at the camera", "头部偏转，请正对镜头"),
}


def enrollment_refused(code: str, details: Mapping[str, Any]) -> DomainError:
    """The encoder's refusal (`drivers.face.EnrollmentError`) as the API says it: 422, the same code and details."""
    en, zh = _enrollment_text(code, details)
    # An image library's own words ("cannot identify image file <_io.BytesIO at 0x7f...>") are not the client's.
    shown = {k: v for k, v in details.items() if not (code == "unreadable_image" and k == "reason")}
    return DomainError(code, en, zh, status_code=422, **shown)


def consent_required(holder_id: int) -> Conflict:
    return Conflict(
        "face_consent_required",
        f"Holder {holder_id} has not consented to face admission; record the separate consent first",
        f"持卡人 {holder_id} 尚未单独同意人脸识别入园，请先记录其同意",
        holder_id=holder_id,
    )


def no_season_pass(holder_id: int) -> Conflict:
    return Conflict(
        "no_season_pass",
        f"Holder {holder_id} has no valid season pass; faces are enrolled for season-pass holders only",
        f"持卡人 {holder_id} 没有有效季卡，仅季卡持卡人可登记人脸",
        holder_id=holder_id,
    )


def face_key_missing() -> DomainError:
    return DomainError(
        "face_key_missing",
        "Face admission is off: the cloud has no face key (STARFISH_FACE_KEY_FILE)",
        "人脸识别入园未启用：云端未配置人脸密钥（STARFISH_FACE_KEY_FILE）",
        status_code=503,
    )


def no_face_enrolled(holder_id: int) -> DomainError:
    return DomainError(
        "face_not_enrolled",
        f"No face is enrolled for holder {holder_id}",
        f"持卡人 {holder_id} 未登记人脸",
        status_code=404,
    )


def no_photo_kept(holder_id: int) -> DomainError:
    return DomainError(
        "face_photo_not_kept",
        f"No enrollment photo is kept for holder {holder_id} (its sites do not keep photos)",
        f"未保存持卡人 {holder_id} 的登记照片（所属雪场未开启保存照片）",
        status_code=404,
    )
