"""A served cloud: the app under a real uvicorn on a free loopback port, in a thread (`live_server`) or in
its own process as deployed (`CloudServer`, for the whole stack, the demo and the benchmarks).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import httpx
import uvicorn
from fastapi import FastAPI

from harness.processes import ChildProcess, free_port, poll_until
from models.api import API_PREFIX

API = API_PREFIX
# uvicorn as `python -m uvicorn --factory` runs it, with the app's own INFO logs kept (sync connects, sessions).
_SERVE = (
    "import logging, sys, uvicorn; "
    "logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s: %(message)s'); "
    "uvicorn.run('cloud.app:create_app', factory=True, host='127.0.0.1', port=int(sys.argv[1]), "
    "workers=int(sys.argv[2]), log_level='warning', access_log=False)"
)


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    if not poll_until(lambda: server.started, 10, interval=0.02):
        raise RuntimeError("uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class CloudServer(ChildProcess):
    """The cloud service in its own process (uvicorn, its MQTT loop), configured by `STARFISH_*` variables in
    `env`; it keeps its port across restarts. `workers` > 1: uvicorn's worker processes (the benchmark).
    """

    def __init__(self, env: Mapping[str, str], log: Path, *, workers: int = 1, own_session: bool = False) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        argv = [sys.executable, "-c", _SERVE, str(self.port), str(workers)]
        super().__init__("the cloud server", argv, log, env, own_session=own_session)

    def start(self, timeout: float = 30.0) -> Self:
        """Launch it and return once its health check answers."""
        self.launch()
        self.wait_until(self.answers, f"answering on {self.base}", timeout, interval=0.1)
        return self

    def answers(self) -> bool:
        try:
            return httpx.get(f"{self.base}{API}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False
