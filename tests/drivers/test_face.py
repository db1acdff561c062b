"""The face encoder against the shared real photos (face_recognition's examples), and its fake.

Measured on these photos by DlibFaceEncoder.enroll (largest face; enrollment gates: face >= 120 px, blur >= 60,
brightness 50-210, |yaw| <= 20, |pitch| <= 20 degrees):

photo                                   face_px  blur  brightness  yaw    pitch  enrollment
obama.jpg                               247      628   145          0.6    0.5   ok
obama-720p.jpg                          161      602   147          1.5    0.8   ok
obama2.jpg (= test_images/32bit.png)    291      376   125        -27.3    6.1   head_turned
obama_small.jpg                         107      318   149          2.5   -0.2   face_too_small
knn test/obama1.jpg                     398      255   118         24.2    3.9   head_turned
test_images/obama3.jpg                  323      286   127         16.7   22.4   head_turned (pitch)
biden.jpg                               333      289   114         14.2    2.1   ok
knn train/biden/biden2.jpg              452      443   139          4.3   -6.0   ok
alex-lacamoire.png (video still)        164       67   100         24.8    0.9   head_turned
knn test/alex_lacamoire1.jpg            337     1662   131          1.4    3.2   ok
knn train/alex_lacamoire/img1.jpg       314      663   145         -2.9   -3.8   ok
lin-manuel-miranda.png                  321      213   123         16.8   -7.3   ok
knn train/rose_leslie/img1.jpg          279      345   142         -5.4    2.4   ok
knn train/rose_leslie/img2.jpg          267      578   135          6.4   -1.0   ok
knn train/kit_harington/john1.jpeg      125      309   141         -7.7   -0.2   ok
knn train/kit_harington/john2.jpeg      203     1878   112        -36.6   -5.1   head_turned
knn test/johnsnow_test1.jpg             210      605   116         20.0    8.1   ok
two_people.jpg: faces 171 and 170 px -> several_faces; knn test/obama_and_biden.jpg: 211, 176, 176 px -> several_faces

Blur is measured on the face crop scaled to 128 px, so it does not grow with the photo's resolution: the sharp
photos give 200-1900, a soft video still 67. The gate's looser gates (80 px, blur 30, brightness 40-220, yaw 30,
pitch 25) let the turned-but-usable frames (obama2 at -27 degrees) through to matching.
"""

from __future__ import annotations

import pickle
from functools import cache
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from drivers.face import (
    ENROLLMENT_GATES,
    GOOD_QUALITY,
    MAX_PHOTO_BYTES,
    NO_GATES,
    DlibFaceEncoder,
    Enrolled,
    EnrollmentError,
    FaceEncoder,
    FaceImageError,
    FakeFaceEncoder,
    Quality,
    QualityGates,
    fake_face,
)
from drivers.face_image import decode_photo
from harness.testdata import SHARED_TESTDATA

FACES = SHARED_TESTDATA / "faces"
Image = npt.NDArray[np.uint8]
TRAIN = FACES / "knn_examples" / "train"
TEST = FACES / "knn_examples" / "test"


@pytest.fixture(scope="module")
def encoder() -> DlibFaceEncoder:
    return DlibFaceEncoder(detect_width=800, gates=NO_GATES)


def _read(path: Path) -> Image:
    image = cv2.imread(str(path))
    assert image is not None, path
    return np.asarray(image, dtype=np.uint8)


@cache
def _photo_bytes(path: Path) -> bytes:
    return path.read_bytes()


def _analyzed(encoder: DlibFaceEncoder, path: Path) -> np.ndarray:
    faces = encoder.analyze(_read(path))
    assert faces and faces[0].encoding is not None, f"no face found in {path.name}"
    return faces[0].encoding


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b))


def _jpeg(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return buf.tobytes()


def _enroll_error(encoder: DlibFaceEncoder, data: bytes) -> EnrollmentError:
    with pytest.raises(EnrollmentError) as caught:
        encoder.enroll(data)
    return caught.value


SAME_PERSON = [
    pytest.param(FACES / "obama.jpg", FACES / "obama2.jpg", id="obama-two-speeches"),
    pytest.param(FACES / "biden.jpg", TRAIN / "biden" / "biden2.jpg", id="biden"),
    pytest.param(TEST / "alex_lacamoire1.jpg", TRAIN / "alex_lacamoire" / "img1.jpg", id="alex-lacamoire"),
    pytest.param(TRAIN / "rose_leslie" / "img1.jpg", TRAIN / "rose_leslie" / "img2.jpg", id="rose-leslie"),
    pytest.param(TEST / "johnsnow_test1.jpg", TRAIN / "kit_harington" / "john2.jpeg", id="kit-harington"),
]
DIFFERENT_PEOPLE = [
    pytest.param(FACES / "obama.jpg", FACES / "biden.jpg", id="obama-biden"),
    pytest.param(FACES / "alex-lacamoire.png", FACES / "lin-manuel-miranda.png", id="alex-lin"),
    pytest.param(TRAIN / "rose_leslie" / "img1.jpg", TRAIN / "kit_harington" / "john2.jpeg", id="rose-kit"),
    pytest.param(FACES / "obama2.jpg", TEST / "alex_lacamoire1.jpg", id="obama-alex"),
]


@pytest.mark.parametrize(("a", "b"), SAME_PERSON)
def test_the_same_person_in_two_photos_is_close(encoder: DlibFaceEncoder, a: Path, b: Path) -> None:
    assert _distance(_analyzed(encoder, a), _analyzed(encoder, b)) < 0.6


@pytest.mark.parametrize(("a", "b"), DIFFERENT_PEOPLE)
def test_different_people_are_far_apart(encoder: DlibFaceEncoder, a: Path, b: Path) -> None:
    assert _distance(_analyzed(encoder, a), _analyzed(encoder, b)) > 0.7


def test_an_enrolled_photo_matches_a_camera_sized_frame_of_another_photo(encoder: DlibFaceEncoder) -> None:
    enrolled = encoder.enroll(_photo_bytes(TRAIN / "biden" / "biden2.jpg"))
    frame = np.asarray(cv2.resize(_read(FACES / "biden.jpg"), (291, 660)), np.uint8)  # the face ~100 px, as at a lane
    gate = DlibFaceEncoder(detect_width=640, upsample=1)
    faces = gate.analyze(frame)
    assert isinstance(enrolled, Enrolled) and enrolled.encoding.dtype == np.float32
    assert faces and QualityGates().failed(faces[0].quality) is None
    assert faces[0].encoding is not None and _distance(enrolled.encoding, faces[0].encoding) < 0.6


@pytest.mark.parametrize("photo", [FACES / "two_people.jpg", TEST / "obama_and_biden.jpg"], ids=["two", "three"])
def test_analyze_lists_every_face_largest_first_and_encodes_only_the_largest(
    encoder: DlibFaceEncoder, photo: Path
) -> None:
    faces = encoder.analyze(_read(photo))
    assert len(faces) >= 2
    assert [f.box.area for f in faces] == sorted((f.box.area for f in faces), reverse=True)
    assert faces[0].encoding is not None and faces[0].encoding.shape == (128,)
    assert all(f.encoding is None for f in faces[1:])


def _side_by_side(encoder: DlibFaceEncoder, big: Path, small: Path) -> np.ndarray:
    """Two real photos in one frame, the second scaled so its face is 0.6 times the first's."""
    left, right = _read(big), _read(small)
    scale = 0.6 * encoder.analyze(left)[0].quality.face_px / encoder.analyze(right)[0].quality.face_px
    right = np.asarray(cv2.resize(right, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA), np.uint8)
    canvas = np.zeros((max(left.shape[0], right.shape[0]), left.shape[1] + right.shape[1], 3), np.uint8)
    canvas[: left.shape[0], : left.shape[1]] = left
    canvas[: right.shape[0], left.shape[1] :] = right
    return canvas


@pytest.mark.parametrize(
    ("big", "small"),
    [
        pytest.param(FACES / "obama.jpg", TRAIN / "biden" / "biden2.jpg", id="obama-larger"),
        pytest.param(TRAIN / "biden" / "biden2.jpg", FACES / "obama.jpg", id="biden-larger"),
    ],
)
def test_a_frame_with_two_people_encodes_the_larger_face(encoder: DlibFaceEncoder, big: Path, small: Path) -> None:
    faces = encoder.analyze(_side_by_side(encoder, big, small))
    assert len(faces) == 2 and faces[0].encoding is not None
    assert _distance(faces[0].encoding, _analyzed(encoder, big)) < 0.2
    assert _distance(faces[0].encoding, _analyzed(encoder, small)) > 0.6


@pytest.mark.parametrize("photo", [FACES / "two_people.jpg", TEST / "obama_and_biden.jpg"], ids=["two", "three"])
def test_enrollment_refuses_several_faces_of_similar_size(encoder: DlibFaceEncoder, photo: Path) -> None:
    error = _enroll_error(encoder, _photo_bytes(photo))
    assert error.code == "several_faces" and int(str(error.details["faces"])) >= 2


def test_enrollment_takes_one_face_clearly_larger_than_a_bystander(encoder: DlibFaceEncoder) -> None:
    photo = _read(TEST / "obama_and_biden.jpg")
    holder = _read(FACES / "obama.jpg")[100:700, 250:700]
    photo[0:960, 0:720] = cv2.resize(holder, (720, 960))  # Obama's face ~400 px beside faces of ~180-210
    enrolled = encoder.enroll(_jpeg(photo))
    assert _distance(enrolled.encoding, _analyzed(encoder, FACES / "obama.jpg")) < 0.2


@pytest.mark.parametrize(
    "image",
    [
        pytest.param(_read(SHARED_TESTDATA / "qr-photos" / "qrcode-1" / "1.webp"), id="qr-photo"),
        pytest.param(np.full((600, 600, 3), 180, np.uint8), id="blank"),
    ],
)
def test_a_photo_without_a_face_is_refused_as_no_face(encoder: DlibFaceEncoder, image: np.ndarray) -> None:
    assert encoder.analyze(image) == []
    assert _enroll_error(encoder, _jpeg(image)).code == "no_face"


@pytest.mark.parametrize("data", [b"", b"not an image at all", b"\xff\xd8\xff\xe0" + b"\0" * 200], ids=repr)
def test_garbage_bytes_are_an_unreadable_image(encoder: DlibFaceEncoder, data: bytes) -> None:
    error = _enroll_error(encoder, data)
    assert error.code == "unreadable_image" and error.details["reason"]


def test_a_file_over_the_limit_is_refused_before_decoding(encoder: DlibFaceEncoder) -> None:
    error = _enroll_error(encoder, _photo_bytes(FACES / "obama.jpg") + b"\0" * MAX_PHOTO_BYTES)
    assert error.code == "file_too_large" and error.details["max_bytes"] == MAX_PHOTO_BYTES


def test_a_downscaled_face_is_too_small_and_the_error_gives_the_minimum(encoder: DlibFaceEncoder) -> None:
    small = cv2.resize(_read(FACES / "obama.jpg"), None, fx=0.35, fy=0.35, interpolation=cv2.INTER_AREA)
    error = _enroll_error(encoder, _jpeg(small))
    assert error.code == "face_too_small"
    assert error.details["min_face_px"] == ENROLLMENT_GATES.min_face_px
    assert int(str(error.details["face_px"])) < ENROLLMENT_GATES.min_face_px


def test_a_blurred_copy_is_refused_as_blurry(encoder: DlibFaceEncoder) -> None:
    blurred = cv2.blur(_read(FACES / "obama.jpg"), (15, 15))
    error = _enroll_error(encoder, _jpeg(blurred))
    assert error.code == "blurry" and float(str(error.details["blur"])) < ENROLLMENT_GATES.min_blur


def test_a_darkened_copy_is_refused_as_too_dark(encoder: DlibFaceEncoder) -> None:
    dark = (_read(FACES / "obama.jpg").astype(np.float32) * 0.25).astype(np.uint8)
    error = _enroll_error(encoder, _jpeg(dark))
    assert error.code == "too_dark" and float(str(error.details["brightness"])) < ENROLLMENT_GATES.min_brightness


def test_a_turned_head_is_refused_with_the_measured_yaw(encoder: DlibFaceEncoder) -> None:
    error = _enroll_error(encoder, _photo_bytes(FACES / "obama2.jpg"))
    assert error.code == "head_turned" and abs(float(str(error.details["yaw_deg"]))) > 20


def test_a_32_bit_png_reads_like_the_same_photo_as_jpeg(encoder: DlibFaceEncoder) -> None:
    png = FACES / "test_images" / "32bit.png"
    rgba = np.asarray(cv2.imread(str(png), cv2.IMREAD_UNCHANGED), dtype=np.uint8)
    assert rgba.shape[2] == 4 and decode_photo(_photo_bytes(png)).shape[2] == 3
    faces = encoder.analyze(rgba)
    assert faces[0].encoding is not None
    assert _distance(faces[0].encoding, _analyzed(encoder, FACES / "obama2.jpg")) < 0.1
    assert _enroll_error(encoder, _photo_bytes(png)).code == "head_turned"  # read fine; obama2 looks aside


def test_a_webp_upload_is_enrolled(encoder: DlibFaceEncoder) -> None:
    ok, webp = cv2.imencode(".webp", _read(FACES / "obama.jpg"), [cv2.IMWRITE_WEBP_QUALITY, 90])
    assert ok
    enrolled = encoder.enroll(webp.tobytes())
    assert _distance(enrolled.encoding, encoder.enroll(_photo_bytes(FACES / "obama.jpg")).encoding) < 0.1


def test_an_rgb_frame_gives_the_same_face_as_its_bgr_original(encoder: DlibFaceEncoder) -> None:
    bgr = _read(FACES / "obama.jpg")
    rgb_face = encoder.analyze(np.asarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), np.uint8), bgr=False)[0]
    assert (
        rgb_face.encoding is not None and _distance(rgb_face.encoding, _analyzed(encoder, FACES / "obama.jpg")) < 1e-4
    )


def test_analyze_without_encoding_leaves_the_encoding_out(encoder: DlibFaceEncoder) -> None:
    faces = encoder.analyze(_read(FACES / "obama.jpg"), encode_largest=False)
    assert len(faces) == 1 and faces[0].encoding is None and faces[0].quality.face_px > 200


def test_a_face_failing_the_encoders_gates_is_found_but_not_encoded() -> None:
    turned = _read(TRAIN / "kit_harington" / "john2.jpeg")  # yaw -37 degrees: past the gate's 30
    faces = DlibFaceEncoder(detect_width=800).analyze(turned)
    assert faces and faces[0].encoding is None
    assert QualityGates().failed(faces[0].quality) == "head_turned"


@pytest.mark.parametrize(
    "image",
    [np.zeros((10, 10, 3), np.float32), np.zeros((0, 0, 3), np.uint8), np.zeros((5, 5, 2), np.uint8), "frame"],
    ids=["float", "empty", "two-channel", "not-an-array"],
)
def test_analyze_refuses_what_is_no_image(encoder: DlibFaceEncoder, image: object) -> None:
    with pytest.raises(FaceImageError):
        encoder.analyze(image)  # type: ignore[arg-type]


def test_the_landmark_model_must_be_small_or_large() -> None:
    with pytest.raises(ValueError, match="model"):
        DlibFaceEncoder(model="medium")


def test_the_small_landmark_model_encodes_the_same_person_close() -> None:
    small = DlibFaceEncoder(model="small", detect_width=800, gates=NO_GATES)
    assert _distance(_analyzed(small, FACES / "obama.jpg"), _analyzed(small, FACES / "obama2.jpg")) < 0.6


def _q(**changes: float) -> Quality:
    values: dict[str, float] = {
        "face_px": 200,
        "blur": 300.0,
        "brightness": 120.0,
        "yaw_deg": 0.0,
        "pitch_deg": 0.0,
        **changes,
    }
    return Quality(
        face_px=int(values["face_px"]),
        blur=values["blur"],
        brightness=values["brightness"],
        yaw_deg=values["yaw_deg"],
        pitch_deg=values["pitch_deg"],
    )


@pytest.mark.parametrize(
    ("quality", "code"),
    [
        pytest.param(_q(), None, id="good"),
        pytest.param(_q(face_px=79), "face_too_small", id="small"),
        pytest.param(_q(brightness=39), "too_dark", id="dark"),
        pytest.param(_q(brightness=221), "too_bright", id="bright"),
        pytest.param(_q(blur=29), "blurry", id="blurry"),
        pytest.param(_q(yaw_deg=-31), "head_turned", id="yaw"),
        pytest.param(_q(pitch_deg=26), "head_turned", id="pitch"),
        pytest.param(_q(face_px=10, blur=1), "face_too_small", id="size-first"),
    ],
)
def test_quality_gates_name_the_first_gate_failed(quality: Quality, code: str | None) -> None:
    assert QualityGates().failed(quality) == code


def test_enrollment_gates_are_stricter_than_the_gate_s() -> None:
    borderline = _q(face_px=100, blur=45, yaw_deg=25)
    assert QualityGates().failed(borderline) is None
    assert ENROLLMENT_GATES.failed(borderline) == "face_too_small"
    assert ENROLLMENT_GATES.details("face_too_small", borderline) == {"min_face_px": 120, "face_px": 100}


# The fake, for logic tests of the gate and the cloud.


def test_the_fake_answers_analyze_from_its_queue_then_sees_no_face() -> None:
    near, far = fake_face([0.1] * 128), fake_face([0.9] * 128, quality=_q(face_px=90))
    fake: FaceEncoder = FakeFaceEncoder(analyze=[[far, near], []])
    frame = np.zeros((48, 64, 3), np.uint8)
    first = fake.analyze(frame)
    assert [f.quality.face_px for f in first] == [200, 90] and first[1].encoding is None
    assert first[0].encoding is not None and first[0].encoding.dtype == np.float32
    assert fake.analyze(frame) == [] and fake.analyze(frame) == []


def test_the_fake_answers_every_call_from_a_callable_and_counts_calls() -> None:
    fake = FakeFaceEncoder(analyze=lambda image: [fake_face([float(image[0, 0, 0])] * 128)], delay_ms=1)
    faces = fake.analyze(np.full((4, 4, 3), 7, np.uint8), encode_largest=False)
    assert faces[0].encoding is None
    assert fake.analyze(np.full((4, 4, 3), 7, np.uint8))[0].encoding is not None
    assert fake.calls == 2


def test_the_fake_enrolls_or_raises_what_it_was_given_and_survives_pickling() -> None:
    enrolled = Enrolled(encoding=np.zeros(128, np.float32), box=fake_face().box, quality=GOOD_QUALITY)
    fake = pickle.loads(
        pickle.dumps(FakeFaceEncoder(enroll=[enrolled, EnrollmentError("blurry", "Blurry.", {"blur": 3})]))
    )
    assert fake.enroll(b"photo") is enrolled or fake.calls == 1
    with pytest.raises(EnrollmentError) as caught:
        fake.enroll(b"photo")
    assert (caught.value.code, caught.value.details) == ("blurry", {"blur": 3})
    with pytest.raises(EnrollmentError, match="No face"):
        fake.enroll(b"photo")
