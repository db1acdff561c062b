"""The barrier's one owner: opens it for one passage at a time, watches the passage sensor and the fire alarm.

Everybody else asks through `BarrierController.pass_one` (or a technician's `test_open` and
`set_keep_open`): every request goes through one queue to the one task that talks to the board. A
fault is reported once, the board is reconnected in the background, and the fire alarm holds the
barrier open before it is journaled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from edge.hardware import Barrier

log = logging.getLogger("starfish.gate")


@dataclass(frozen=True, slots=True)
class PassResult:
    """How one opening of the barrier ended."""

    passed: bool
    how: str  # "sensor", "on_open", "timeout", "fault"
    detail: str = ""

    @property
    def fault(self) -> bool:
        return self.how == "fault"


class BarrierController:
    """Sole owner of the barrier device; everybody else asks through `pass_one`."""

    def __init__(
        self,
        barrier: Barrier,
        *,
        has_sensor: bool,
        has_fire_alarm: bool,
        passage_timeout_s: float,
        on_alarm: Callable[[bool], None],
        keep_open: bool = False,
        poll_s: float = 0.02,
        idle_poll_s: float = 0.1,
        reconnect_s: float = 2.0,
    ) -> None:
        self.barrier = barrier
        self.has_sensor = has_sensor
        self.has_fire_alarm = has_fire_alarm
        self.passage_timeout_s = passage_timeout_s
        self.on_alarm = on_alarm
        self.poll_s = poll_s
        self.idle_poll_s = idle_poll_s
        self.reconnect_s = reconnect_s
        self.alarm = False
        self.keep_open = keep_open
        self.sensor_timeouts_in_a_row = 0
        self._requests: asyncio.Queue[tuple[asyncio.Future[PassResult], Callable[[], Awaitable[PassResult]]]] = (
            asyncio.Queue()
        )
        self._serving = False
        self._healthy = False
        self._last_attempt = 0.0
        self._reported_error: str | None = None

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def last_error(self) -> str | None:
        return self.barrier.last_error

    @property
    def held_open(self) -> bool:
        return self.alarm or self.keep_open

    @property
    def busy(self) -> bool:
        """A passage is in progress or waiting for the barrier."""
        return self._serving or not self._requests.empty()

    async def pass_one(self) -> PassResult:
        """Open for one passage and wait for it to end (sensor, open, timeout or fault)."""
        return await self._ask(self._open_once)

    async def test_open(self) -> PassResult:
        """A technician's test: open for one passage exactly as for an admission, and wait for it to end.

        Refused (`how` "busy") while a passage is in progress or waiting, and ("held_open") while the
        barrier is held open by keep-open or the fire alarm: there is nothing to test then, and a
        pulse must not be what closes a held barrier. A skier's scan during the test ends its wait at
        once (`how` "gave_way"): the admission opens for them and its passage is theirs, counted.
        """
        if self.busy:
            return PassResult(False, "busy", "a passage is in progress")
        if self.held_open:
            return PassResult(False, "held_open", "the barrier is held open (keep-open or fire alarm)")
        return await self._ask(lambda: self._open_once(give_way=True))

    async def set_keep_open(self, on: bool) -> PassResult:
        """Hold the barrier open (free passage) or release it; the board's answer, through the barrier task.

        The flag is set at once, so a board that is down now is held open when it reconnects."""
        self.keep_open = on
        return await self._ask(self._apply_hold)

    async def _apply_hold(self) -> PassResult:
        try:
            await self.barrier.set_hold_open(self.held_open)
        except Exception as exc:
            return PassResult(False, "fault", self._fault(exc))
        return PassResult(False, "held" if self.held_open else "released")

    async def _ask(self, op: Callable[[], Awaitable[PassResult]]) -> PassResult:
        fut: asyncio.Future[PassResult] = asyncio.get_running_loop().create_future()
        await self._requests.put((fut, op))
        try:
            # Bounded: a dead barrier task must never hang the gate.
            return await asyncio.wait_for(asyncio.shield(fut), self.passage_timeout_s + 10)
        except TimeoutError:
            fut.cancel()
            return PassResult(False, "fault", "barrier task did not answer")

    def _fault(self, exc: Exception) -> str:
        self._healthy = False
        detail = str(exc) or type(exc).__name__
        if detail != self._reported_error:
            log.error("barrier fault: %s", detail)
            self._reported_error = detail
        return detail

    async def _connect(self) -> None:
        self._last_attempt = time.monotonic()
        try:
            await self.barrier.connect()
            await self.barrier.read_inputs()
            # A crash mid-pulse can leave the open coil on: a fresh start closes it (unless held open).
            await self.barrier.set_hold_open(self.held_open)
        except Exception as exc:
            self._fault(exc)
            return
        if not self._healthy:
            log.info("barrier connected")
        self._healthy = True
        self._reported_error = None

    async def _hold(self, on: bool) -> None:
        try:
            await self.barrier.set_hold_open(on)
        except Exception as exc:
            self._fault(exc)

    async def _watch_alarm(self, fire_alarm: bool | None) -> None:
        if not self.has_fire_alarm or fire_alarm is None or fire_alarm == self.alarm:
            return
        self.alarm = fire_alarm
        log.warning("fire alarm %s", "ON: barrier released" if fire_alarm else "cleared: barrier back to normal")
        await self._hold(self.held_open)  # release first: the journal must not stand between people and the exit
        try:
            self.on_alarm(fire_alarm)
        except Exception:
            log.exception("could not journal the fire alarm %s", "on" if fire_alarm else "off")

    async def _idle(self) -> None:
        if not self._healthy:
            if time.monotonic() - self._last_attempt >= self.reconnect_s:
                await self._connect()
            return
        if self.has_fire_alarm:
            try:
                inputs = await self.barrier.read_inputs()
            except Exception as exc:
                self._fault(exc)
                return
            await self._watch_alarm(inputs.fire_alarm)

    async def _serve(self, fut: asyncio.Future[PassResult], op: Callable[[], Awaitable[PassResult]]) -> None:
        if fut.done():  # the asker gave up (stopping): do not open for nobody
            return
        self._serving = True
        try:
            result = await op()
        finally:
            self._serving = False
        if not fut.done():
            fut.set_result(result)

    async def _open_once(self, *, give_way: bool = False) -> PassResult:
        try:
            before = (await self.barrier.read_inputs()).passage_complete if self.has_sensor else None
        except Exception as exc:
            return PassResult(False, "fault", self._fault(exc))
        if not self.has_sensor:
            try:
                await self.barrier.pulse_open()
            except Exception as exc:
                return PassResult(False, "fault", self._fault(exc))
            self._healthy = True
            return PassResult(True, "on_open")
        # Watch the sensor from the moment the coil goes on, not after the pulse: a quick skier's
        # passage signal can start and end within the pulse. The driver serialises the requests.
        pulse = asyncio.create_task(self.barrier.pulse_open(), name="pulse")
        watch = asyncio.create_task(self._wait_for_passage(bool(before), give_way), name="watch-passage")
        try:
            try:
                await pulse
            except Exception as exc:
                fault = self._fault(exc)
                if watch.done() and not watch.cancelled() and watch.exception() is None and watch.result().passed:
                    return watch.result()  # the barrier did open and the sensor saw the skier through
                watch.cancel()
                await asyncio.gather(watch, return_exceptions=True)
                return PassResult(False, "fault", fault)
            self._healthy = True  # before the watch: a sensor it cannot read marks the board faulty
            result = await watch
        except asyncio.CancelledError:
            for task in (pulse, watch):
                task.cancel()
            await asyncio.gather(pulse, watch, return_exceptions=True)
            raise
        if give_way:  # a test: an empty turnstile is expected, and says nothing of the admissions' streak
            if result.passed:
                self.sensor_timeouts_in_a_row = 0
        elif result.how == "timeout":
            self.sensor_timeouts_in_a_row += 1
            if self.sensor_timeouts_in_a_row % 3 == 0:
                log.error(
                    "passage sensor: %d admissions in a row without a passage; check the sensor",
                    self.sensor_timeouts_in_a_row,
                )
        else:
            self.sensor_timeouts_in_a_row = 0
        return result

    async def _wait_for_passage(self, high_before: bool, give_way: bool = False) -> PassResult:
        seen_low = not high_before
        deadline = time.monotonic() + self.passage_timeout_s
        while time.monotonic() < deadline:
            await asyncio.sleep(self.poll_s)
            if give_way and not self._requests.empty():
                return PassResult(False, "gave_way", "a ticket was scanned: the test gave way to the admission")
            try:
                inputs = await self.barrier.read_inputs()
            except Exception as exc:
                # The barrier opened; whether anybody passed is unknown: not counted.
                self._fault(exc)
                return PassResult(False, "timeout", "sensor unreadable after opening")
            await self._watch_alarm(inputs.fire_alarm)
            if inputs.passage_complete and seen_low:
                return PassResult(True, "sensor")
            if not inputs.passage_complete:
                seen_low = True
        if not seen_low:
            # High before the pulse and high throughout: the sensor is stuck, not a skier.
            # Count on open, as a gate without a sensor does, rather than admit for free.
            log.error("passage sensor stuck high: counting this admission on open; repair the sensor")
            return PassResult(True, "on_open_sensor_stuck")
        return PassResult(False, "timeout")

    async def run(self, stop: asyncio.Event) -> None:
        await self._connect()
        while not stop.is_set() or not self._requests.empty():
            try:
                fut, op = await asyncio.wait_for(self._requests.get(), timeout=self.idle_poll_s)
            except TimeoutError:
                await self._idle()
                continue
            await self._serve(fut, op)
        try:
            await self.barrier.close()
        except Exception as exc:
            log.warning("closing barrier: %s", exc)
