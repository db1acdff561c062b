"""A technician's reload-config, and the running configuration as the technician page shows it.

`reload_config` re-reads the YAML the daemon was started with. An invalid file changes nothing
(`invalid_config`, with the errors). A valid one has its live parts applied at once: the gate's rules
(`gate:` except its site and gate ids), `intake`, `input_debounce_s`, `max_scan_age_s`, `log_level`,
the face rule (all but `m`, the length of the vote window), the face quality gates and vote timings,
and the page's session and lockout settings. Every other difference (barrier, camera, scanner,
store, sync, keys, the page's address, port or TLS, the ids, face on/off or its key...) is listed
by its dotted path as `restart_needed`; the running configuration (`daemon.config`, what the page
shows) then holds the live parts of the new file and the rest of the old one. A reload that needs a
restart is answered as not ok (the page shows it as a refusal), though its live parts took effect.

Keep-open after a reload is what the rules in force say (`GateService.config.emergency_open`: the file's,
the technician's or the cloud's, whichever holds it): the barrier is held or released to match, so a file
that drops its keep-open never releases a barrier the cloud (or a technician) still holds open.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from edge.config import ConfigError, EdgeConfig, load_config
from edge.web.port import ActionResult

if TYPE_CHECKING:
    from edge.daemon import GateDaemon

log = logging.getLogger("starfish.gate")

MASK = "••••"
_MASKED_NAMES = frozenset({"key_file", "key_env", "tls_key"})
_MASKED_PARTS = ("password", "secret", "token")
_WEB_LIVE = ("session_idle_min", "session_max_h", "lockout_after", "lockout_min", "lang", "break_glass")
_FACE_LIVE = ("vote_max_age_s", "readmit_after_s")
_URL_LOGIN = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")


def _secret(name: str) -> bool:
    return name in _MASKED_NAMES or any(part in name for part in _MASKED_PARTS)


def _masked(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (MASK if _secret(str(k)) and v is not None else _masked(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    if isinstance(value, str):
        return _URL_LOGIN.sub(rf"\1{MASK}@", value)  # rtsp://admin:pw@camera/... keeps its host, not its login
    return value


def _descriptions(model: BaseModel, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for name, info in type(model).model_fields.items():
        path = f"{prefix}{name}"
        if info.description:
            out[path] = info.description
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            out.update(_descriptions(value, f"{path}."))
    return out


def config_view(config: EdgeConfig) -> dict[str, Any]:
    """The configuration as the page shows it: `config` (secrets masked by field name: passwords,
    tokens, secrets, key files and variables, TLS keys) and `descriptions` by dotted path."""
    return {"config": _masked(config.model_dump(mode="json")), "descriptions": _descriptions(config)}


def _diff(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            out += _diff(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        return out
    return [] if old == new else [path or "(all)"]


def _live(old: EdgeConfig, new: EdgeConfig) -> EdgeConfig:
    """`old` with the live parts of `new`."""
    update: dict[str, Any] = {
        "gate": new.gate.model_copy(update={"site_id": old.gate.site_id, "gate_id": old.gate.gate_id}),
        "intake": new.intake,
        "input_debounce_s": new.input_debounce_s,
        "max_scan_age_s": new.max_scan_age_s,
        "log_level": new.log_level,
    }
    if old.face is not None and new.face is not None:
        rule = new.face.rule.model_copy(update={"m": old.face.rule.m})
        if rule.k > rule.m:
            rule = rule.model_copy(update={"k": old.face.rule.k})
        live = {"rule": rule, "quality": new.face.quality, **{f: getattr(new.face, f) for f in _FACE_LIVE}}
        update["face"] = old.face.model_copy(update=live)
    if old.web is not None and new.web is not None:
        update["web"] = old.web.model_copy(update={f: getattr(new.web, f) for f in _WEB_LIVE})
    return old.model_copy(update=update)


async def _apply(daemon: GateDaemon, old: EdgeConfig, running: EdgeConfig, *, keep_open: bool) -> None:
    """Make the daemon run by `running` (which differs from `old` in live parts only)."""
    daemon.config = running
    gate = running.gate
    daemon.service.config = gate.model_copy(update={"emergency_open": gate.emergency_open or keep_open})
    # The barrier follows the rules in force (file, technician or cloud keep-open), not the file's change:
    # a file that drops its keep-open while the cloud holds one leaves the barrier open.
    held = daemon.service.config.emergency_open
    if held != daemon.controller.keep_open:
        log.warning("gate rules: keep-open %s after the reload", "on" if held else "off")
        await daemon.controller.set_keep_open(held)
    ic = running.intake
    daemon.intake.per_source, daemon.intake.rate_per_s, daemon.intake.burst = (
        ic.queue_per_input,
        ic.rate_per_s,
        ic.burst,
    )
    for debouncer in daemon.debouncers:
        debouncer.window_s = running.input_debounce_s
    logging.getLogger().setLevel(running.log_level)
    face, fc = daemon.face, running.face
    if face is not None and fc is not None:
        from edge.hardware import quality_gates

        r = fc.rule
        m = face.matcher
        m.rule = r.to_rule()
        m.gates = quality_gates(fc)
        m.vote_max_age_s, m.readmit_after_s = fc.vote_max_age_s, fc.readmit_after_s
    served = daemon.panel.served_web if daemon.panel is not None else None
    if served is not None and running.web is not None:
        for name in _WEB_LIVE:  # the page holds the WebConfig it was built with: change that one in place
            setattr(served, name, getattr(running.web, name))


async def reload_config(daemon: GateDaemon, *, keep_open: bool = False) -> ActionResult:
    """Re-read the daemon's config file; apply its live parts; name what needs a restart."""
    path = daemon.config_path
    if path is None:
        en, zh = "The gate was not started from a config file", "闸机并非由配置文件启动"
        return ActionResult(False, "no_config_file", en, zh)
    try:
        new = await asyncio.to_thread(load_config, path)
    except ConfigError as exc:
        en = "The config file is not valid; the gate keeps running on the old one"
        zh = "配置文件无效；闸机继续使用原配置运行"
        return ActionResult(False, "invalid_config", en, zh, {"errors": str(exc)})
    old = daemon.config
    running = _live(old, new)
    applied = _diff(old.model_dump(mode="json"), running.model_dump(mode="json"))
    restart = _diff(running.model_dump(mode="json"), new.model_dump(mode="json"))
    await _apply(daemon, old, running, keep_open=keep_open)
    if applied:
        log.warning("config reloaded from %s: %s", path, ", ".join(applied))
    details = {"applied": applied, "restart_needed": restart}
    if restart:
        en = f"Applied what can change live; restart the gate for: {', '.join(restart)}"
        zh = f"已应用可在线生效的部分；以下需重启闸机：{', '.join(restart)}"
        return ActionResult(False, "restart_needed", en, zh, details)
    if not applied:
        return ActionResult(True, "unchanged", "The config file has not changed", "配置文件没有变化", details)
    return ActionResult(True, "done", "Config reloaded", "配置已重新加载", details)
