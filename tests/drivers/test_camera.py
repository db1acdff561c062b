"""Cameras: a real MJPG video through OpenCV, reconnects with a scripted capture, and the fake."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.qr_decode import empty_frame, synthetic_frame, synthetic_payload
from drivers.camera import FakeCamera, OpenCvCamera, is_live_source
from drivers.errors import DriverConnectionError, DriverError
from drivers.qr import DEFAULT_DECODER, make_decoder


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedCapture:
    """A VideoCapture that plays a script: frames, then False reads (the cable was pulled)."""

    def __init__(self, frames: list[np.ndarray], *, opened: bool = True) -> None:
        self.frames = list(frames)
        self.opened = opened
        self.released = False
        self.props: dict[int, float] = {}

    def isOpened(self) -> bool:
        return self.opened

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.released or not self.frames:
            return False, None
        return True, self.frames.pop(0)

    def set(self, prop_id: int, value: float) -> bool:
        self.props[prop_id] = value
        return True

    def release(self) -> None:
        self.released = True


class CaptureFactory:
    """Hands out the scripted captures in order and records every open."""

    def __init__(self, *captures: ScriptedCapture) -> None:
        self.captures = list(captures)
        self.opened: list[int | str] = []

    def __call__(self, source: int | str) -> ScriptedCapture:
        self.opened.append(source)
        return self.captures.pop(0)


def frame(value: int) -> np.ndarray:
    return np.full((4, 4, 3), value, np.uint8)


def write_mjpg(path: Path, frames: list[np.ndarray]) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (640, 480))
    assert writer.isOpened(), "this OpenCV build cannot write MJPG/avi"
    for image in frames:
        writer.write(image)
    writer.release()


def test_codes_in_a_recorded_video_are_read_frame_by_frame_until_its_end(tmp_path: Path) -> None:
    tickets = [synthetic_payload(seed) for seed in range(3)]
    video = tmp_path / "gate-3.avi"
    write_mjpg(video, [empty_frame(), *(synthetic_frame(t) for t in tickets), empty_frame()])
    decoder = make_decoder(DEFAULT_DECODER)

    seen: list[list[str]] = []
    with OpenCvCamera(source=str(video)) as camera:
        while (image := camera.read()) is not None:
            assert image.shape == (480, 640, 3)
            seen.append([code.text for code in decoder.decode(image)])
        assert camera.read() is None

    assert seen == [[], *([t] for t in tickets), []]


def test_missing_video_file_is_a_connection_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DriverConnectionError, match=r"no-such-clip\.avi"):
        OpenCvCamera(source=str(tmp_path / "no-such-clip.avi"))


def test_absent_camera_device_is_a_connection_error_naming_it() -> None:
    if Path("/dev/video63").exists():
        pytest.skip("this machine has a /dev/video63")

    with pytest.raises(DriverConnectionError, match="camera 63"):
        OpenCvCamera(source=63)


def test_camera_that_goes_away_is_reopened_after_the_delay() -> None:
    clock = FakeClock()
    unplugged, replugged = ScriptedCapture([frame(1), frame(2)]), ScriptedCapture([frame(3)])
    factory = CaptureFactory(unplugged, replugged)
    camera = OpenCvCamera(source=0, reopen_delay_s=2.0, capture_factory=factory, clock=clock)

    assert camera.read() is not None
    assert camera.read() is not None
    with pytest.raises(DriverConnectionError, match="camera 0 stopped delivering frames"):
        camera.read()
    assert unplugged.released

    clock.now += 1.9
    with pytest.raises(DriverConnectionError, match="camera 0 stopped delivering frames"):
        camera.read()
    assert factory.opened == [0]

    clock.now += 0.1
    image = camera.read()

    assert image is not None and image[0, 0, 0] == 3
    assert factory.opened == [0, 0]
    assert not replugged.released


def test_failed_reopen_waits_another_delay_before_trying_again() -> None:
    clock = FakeClock()
    factory = CaptureFactory(ScriptedCapture([]), ScriptedCapture([], opened=False), ScriptedCapture([frame(7)]))
    camera = OpenCvCamera(source="rtsp://gate-3.local/stream", reopen_delay_s=1.0, capture_factory=factory, clock=clock)
    with pytest.raises(DriverConnectionError, match="stopped delivering"):
        camera.read()

    clock.now += 1.0
    with pytest.raises(DriverConnectionError, match=re.escape("cannot open camera 'rtsp://gate-3.local/stream'")):
        camera.read()
    clock.now += 0.5
    with pytest.raises(DriverConnectionError, match="retrying every 1 s"):
        camera.read()
    assert len(factory.opened) == 2

    clock.now += 0.5
    image = camera.read()

    assert image is not None and image[0, 0, 0] == 7
    assert len(factory.opened) == 3


def test_outage_repeats_one_message_until_its_state_changes() -> None:
    clock = FakeClock()
    factory = CaptureFactory(ScriptedCapture([]), *(ScriptedCapture([], opened=False) for _ in range(2)))
    camera = OpenCvCamera(source=2, reopen_delay_s=1.0, capture_factory=factory, clock=clock)

    messages = []
    for _ in range(6):  # reads 0.5 s apart, as a caller backing off would do
        with pytest.raises(DriverConnectionError) as caught:
            camera.read()
        messages.append(str(caught.value))
        clock.now += 0.5

    stopped, cannot_open = messages[0], messages[2]
    assert messages == [stopped, stopped, cannot_open, cannot_open, cannot_open, cannot_open]
    assert "stopped delivering" in stopped and "cannot open camera 2" in cannot_open
    assert len(factory.opened) == 3  # the first open, then one attempt per second


def test_lost_camera_releases_its_capture() -> None:
    capture = ScriptedCapture([])
    camera = OpenCvCamera(source=0, capture_factory=CaptureFactory(capture), clock=FakeClock())

    with pytest.raises(DriverConnectionError):
        camera.read()

    assert capture.released


def test_file_that_stops_reading_ends_without_reopening() -> None:
    factory = CaptureFactory(ScriptedCapture([frame(1)]))
    camera = OpenCvCamera(source="lift-queue.avi", capture_factory=factory, clock=FakeClock())

    assert camera.read() is not None
    assert camera.read() is None
    assert camera.read() is None
    assert factory.opened == ["lift-queue.avi"]


def test_requested_resolution_is_applied_on_every_open() -> None:
    clock = FakeClock()
    first, second = ScriptedCapture([]), ScriptedCapture([frame(1)])
    camera = OpenCvCamera(
        source=0, width=1280, height=720, reopen_delay_s=0.0, capture_factory=CaptureFactory(first, second), clock=clock
    )
    with pytest.raises(DriverConnectionError):
        camera.read()
    camera.read()

    expected = {cv2.CAP_PROP_FRAME_WIDTH: 1280, cv2.CAP_PROP_FRAME_HEIGHT: 720}
    assert first.props == expected
    assert second.props == expected


def test_closed_camera_releases_the_device_and_refuses_reads() -> None:
    capture = ScriptedCapture([frame(1)])
    with OpenCvCamera(source=0, capture_factory=CaptureFactory(capture)) as camera:
        pass

    assert capture.released
    with pytest.raises(DriverError, match="closed"):
        camera.read()


@pytest.mark.parametrize(
    ("source", "live"),
    [
        pytest.param(0, True, id="device-index"),
        pytest.param("/dev/video2", True, id="device-path"),
        pytest.param("rtsp://10.0.3.7:554/stream1", True, id="rtsp"),
        pytest.param("http://10.0.3.7/mjpeg", True, id="http-mjpeg"),
        pytest.param("recordings/gate-3.avi", False, id="video-file"),
    ],
)
def test_devices_and_streams_are_live_and_files_are_not(source: int | str, live: bool) -> None:
    assert is_live_source(source) is live


def test_fake_camera_replays_its_frames_then_ends() -> None:
    with FakeCamera([frame(1), frame(2)]) as camera:
        assert camera.read() is not None
        assert camera.read() is not None
        assert camera.read() is None

    assert camera.closed


def test_fake_camera_raises_a_scripted_disconnect_and_carries_on() -> None:
    camera = FakeCamera([frame(1), DriverConnectionError("camera 0 stopped delivering frames"), frame(2)])

    assert camera.read() is not None
    with pytest.raises(DriverConnectionError):
        camera.read()
    image = camera.read()

    assert image is not None and image[0, 0, 0] == 2
