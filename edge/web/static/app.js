// The gate's technician page: plain JS against the gate's JSON API (edge.web.app), no framework, no CDN.
"use strict";
(() => {
  const LANGS = ["zh-CN", "en"];
  const KEEP = 50; // live decisions kept on the page
  const CAMERA_PERIOD_MS = 500;
  const STATUS_PERIOD_MS = 3000;
  const $ = (id) => document.getElementById(id);
  let lang = localStorage.getItem("sf_lang") || "zh-CN";
  let session = null;
  let status = null;
  let decisions = []; // newest first
  let configData = null;
  let journalData = null;
  let lastResult = null; // [label key, response body or null, fallback text]

  const t = (key, vars) => {
    let s = (window.SF_I18N[lang] || {})[key] ?? window.SF_I18N.en[key] ?? key;
    for (const [k, v] of Object.entries(vars || {})) s = s.replace(`{${k}}`, String(v));
    return s;
  };
  const msg = (body) => (body ? (lang === "en" ? body.en : body.zh) || body.en || body.code || "" : "");

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const kid of kids) if (kid !== null && kid !== undefined) e.append(kid);
    return e;
  }

  function toLogin() {
    if (location.pathname !== "/login") location.replace("/login");
  }

  async function api(path, opts) {
    const o = opts || {};
    const headers = { Accept: "application/json" };
    if (o.body !== undefined) headers["Content-Type"] = "application/json";
    if (o.method === "POST" && session) headers["X-CSRF-Token"] = session.csrf;
    const res = await fetch(path, {
      method: o.method || "GET", headers, credentials: "same-origin",
      body: o.body === undefined ? undefined : JSON.stringify(o.body),
    });
    let body = null;
    try { body = await res.json(); } catch { body = null; }
    if (res.status === 401 && !o.noRedirect) toLogin();
    return { status: res.status, ok: res.ok, body };
  }

  function setLang(next) {
    lang = LANGS.includes(next) ? next : "zh-CN";
    document.documentElement.lang = lang;
    for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
    const toggle = $("lang-toggle");
    if (toggle) toggle.textContent = t("lang_name");
    document.title = `Starfish · ${t(document.body.dataset.page === "login" ? "login_title" : "title")}`;
    if (document.body.dataset.page === "index") {
      renderStatus();
      renderDecisions();
      renderJournal();
      renderConfig();
      renderResult();
    }
  }

  function wireLangToggle() {
    $("lang-toggle").addEventListener("click", () => {
      const next = lang === "en" ? "zh-CN" : "en";
      localStorage.setItem("sf_lang", next);
      setLang(next);
    });
  }

  // --- formatting ------------------------------------------------------------------------------

  function duration(sec) {
    if (sec === null || sec === undefined) return "–";
    const s = Math.max(0, Math.round(sec));
    if (s < 60) return `${s}${t("s")}`;
    if (s < 3600) return `${Math.floor(s / 60)}${t("m")} ${s % 60}${t("s")}`;
    if (s < 86400) return `${Math.floor(s / 3600)}${t("h")} ${Math.floor((s % 3600) / 60)}${t("m")}`;
    return `${Math.floor(s / 86400)}${t("d")} ${Math.floor((s % 86400) / 3600)}${t("h")}`;
  }
  function bytes(n) {
    if (n === null || n === undefined) return "–";
    if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)} ${t("gb")}`;
    if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} ${t("mb")}`;
    return `${Math.ceil(n / 1024)} ${t("kb")}`;
  }
  const yesno = (v) => (v === null || v === undefined ? t("unknown") : v ? t("yes") : t("no"));
  const onoff = (v) => (v ? t("on") : t("off"));
  function clock(iso) {
    const d = new Date(iso);
    const p = (n) => String(n).padStart(2, "0");
    return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }
  function stamp(iso) {
    const d = new Date(iso);
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${clock(iso)}`;
  }

  // --- status ----------------------------------------------------------------------------------

  function card(title, level, lines) {
    const c = el("div", { class: `card ${level}` }, el("h3", { text: title }));
    for (const [label, value, cls] of lines) {
      if (value === null) continue;
      const long = String(label).length + String(value).length > 20 ? " long" : "";
      c.append(el("div", { class: `kv${long}` }, el("span", { class: "k", text: label }),
        el("span", { class: `v ${cls || ""}`, text: String(value) })));
    }
    return c;
  }
  function device(d, extra) {
    const lines = [[t("status"), t(d.state), d.state === "error" ? "bad" : ""]];
    if (d.last_error) lines.push([t("last_error"), `${d.last_error_at ? clock(d.last_error_at) + " " : ""}${d.last_error}`, "bad"]);
    return lines.concat(extra || []);
  }
  const levelOf = (...states) => (states.includes("bad") ? "bad" : states.includes("warn") ? "warn" : "good");

  function renderStatus() {
    const box = $("status");
    if (!box || !status) return;
    const s = status;
    $("gate-name").textContent = `${s.site_id}/${s.gate_id}`;
    const cards = [];
    cards.push(card(t("gate"), "good", [
      [t("gate"), `${s.site_id}/${s.gate_id} (${s.direction})`], [t("version"), s.version],
      [t("uptime"), duration(s.uptime_s)],
      [t("rules"), s.rules_source === "cloud" ? t("rules_cloud", { t: stamp(s.rules_since) }) : t("rules_local")],
      [t("problem"), s.rules_problem || null, "bad"],
    ]));
    if (s.sync_configured) {
      const syncLevel = levelOf(s.broker_connected ? "" : "bad", s.feed_stale || s.problem ? "bad" : "",
        s.in_step === false ? "bad" : "", s.feed_lag ? "warn" : "", s.resyncing ? "warn" : "");
      cards.push(card(t("sync"), syncLevel, [
        [t("broker"), s.broker_connected ? t("connected") : t("disconnected"), s.broker_connected ? "" : "bad"],
        [t("last_message"), s.last_message_age_s === null ? "–" : t("ago", { t: duration(s.last_message_age_s) })],
        [t("epoch"), s.feed_epoch || "–"],
        [`${t("seq")} / ${t("head")}`, `${s.feed_seq} / ${s.feed_head ?? "–"}`],
        [t("lag"), s.feed_lag ?? "–", s.feed_lag ? "warn" : ""],
        [t("in_step"), yesno(s.in_step), s.in_step === false ? "bad" : ""],
        [t("stale"), s.feed_stale ? t("yes") : null, "bad"],
        [t("resyncing"), s.resyncing ? t("yes") : null, "warn"],
        [t("problem"), s.problem || null, "bad"],
      ]));
    } else {
      cards.push(card(t("sync"), "warn", [[t("sync"), t("not_configured")]]));
    }
    const oldestWarn = s.outbox_oldest_age_s !== null && s.outbox_oldest_age_s > 300;
    cards.push(card(t("outbox"), oldestWarn ? "warn" : "good", [
      [t("outbox"), s.outbox_depth],
      [t("oldest"), s.outbox_oldest_age_s === null ? "–" : t("ago", { t: duration(s.outbox_oldest_age_s) })],
    ]));
    cards.push(card(t("tickets"), "good", [
      [t("tickets"), s.tickets], [t("faces"), s.faces === null ? t("off") : s.faces],
      [t("keys"), s.trusted_keys.length ? s.trusted_keys.join(", ") : t("none")], [t("technicians"), s.technicians],
    ]));
    if (s.face_counts) {
      const f = s.face_counts;
      const skipped = Object.keys(f).filter((k) => k.startsWith("skipped_")).sort()
        .map((k) => [`${t("skipped")}: ${k.slice("skipped_".length)}`, f[k]]);
      cards.push(card(t("face_matching"), "good", [
        [t("faces"), s.faces], [t("matched"), f.matched ?? 0], [t("f_unknown"), f.unknown ?? 0],
        [t("ambiguous"), f.ambiguous ?? 0], [t("no_face"), f.no_face ?? 0], ...skipped,
      ]));
    }
    const barrierLines = device(s.barrier, [
      [t("sensor"), s.passage_sensor ? t("present") : t("absent")],
      [t("fire_alarm"), s.fire_alarm_input ? onoff(s.fire_alarm) : t("absent"), s.fire_alarm ? "bad" : ""],
      [t("keep_open"), onoff(s.keep_open), s.keep_open ? "warn" : ""],
    ]);
    cards.push(card(t("barrier"), levelOf(s.barrier.state === "error" || s.fire_alarm ? "bad" : "",
      s.keep_open ? "warn" : ""), barrierLines));
    for (const [name, d] of [["camera", s.camera], ["scanner", s.scanner]]) {
      cards.push(card(t(name), d.state === "error" ? "bad" : d.state === "absent" ? "muted" : "good", device(d)));
    }
    const lowDisk = s.disk_free_bytes !== null && s.disk_free_bytes < 500 * (1 << 20);
    cards.push(card(t("disk"), lowDisk ? "bad" : "good", [
      [t("disk_free"), bytes(s.disk_free_bytes), lowDisk ? "bad" : ""], [t("journal_size"), bytes(s.journal_bytes)],
    ]));
    box.replaceChildren(...cards);
    const keep = $("action-keep-open");
    keep.dataset.i18n = s.keep_open ? "keep_open_off" : "keep_open_on";
    keep.textContent = t(keep.dataset.i18n);
    keep.dataset.on = s.keep_open ? "true" : "false";
  }

  async function pollStatus() {
    const r = await api("/api/status");
    if (r.ok) {
      status = r.body;
      renderStatus();
    }
    setTimeout(pollStatus, STATUS_PERIOD_MS);
  }

  // --- decisions -------------------------------------------------------------------------------

  function kindOf(d) {
    // Live rows name the reader; rows read back from the journal know only the credential.
    if (d.credential === "face") return t("k_face");
    if (d.input === "scanner") return t("k_serial");
    if (d.input === "camera" || d.credential === "signed" || d.credential === "plain") return t("k_qr");
    return "–";
  }
  function endedOf(d) {
    if (d.outcome !== "admit") return "";
    if (d.passed === null) return t("waiting");
    const how = d.ended ? ` (${d.ended})` : "";
    return (d.passed ? t("passed") : t("not_passed")) + how;
  }
  function decisionRow(d) {
    return el("li", { class: `row ${d.outcome}`, "data-testid": "decision-row", "data-event-id": d.event_id,
      "data-outcome": d.outcome },
      el("span", { class: "time", text: clock(d.at) }),
      el("span", { class: "kind", text: kindOf(d) }),
      el("span", { class: "outcome", text: t(d.outcome) }),
      el("span", { class: "ticket", text: d.ticket_id || "–" }),
      el("span", { class: "reason", text: lang === "en" ? d.reason_en : d.reason_zh }),
      el("span", { class: "ended", text: endedOf(d) }));
  }
  function renderDecisions() {
    const list = $("decisions");
    if (!list) return;
    list.replaceChildren(...decisions.map(decisionRow));
    $("decisions-empty").hidden = decisions.length > 0;
  }
  function addDecision(d) {
    const i = decisions.findIndex((x) => x.event_id === d.event_id);
    if (i >= 0) decisions[i] = d;
    else decisions.unshift(d);
    decisions.sort((a, b) => (a.at < b.at ? 1 : a.at > b.at ? -1 : 0));
    decisions = decisions.slice(0, KEEP);
    renderDecisions();
  }
  function stream() {
    const live = $("live");
    const source = new EventSource("/api/decisions/stream");
    source.addEventListener("open", () => { live.dataset.i18n = "live"; live.textContent = t("live"); live.className = "pill good"; });
    source.addEventListener("decision", (e) => addDecision(JSON.parse(e.data)));
    source.addEventListener("error", async () => {
      live.dataset.i18n = "reconnecting";
      live.textContent = t("reconnecting");
      live.className = "pill warn";
      if (source.readyState === EventSource.CLOSED) {
        // A refused stream (a session gone) is not retried by the browser: check, then start again.
        const r = await api("/api/session");
        if (r.ok) setTimeout(stream, 2000);
      } else {
        api("/api/session");
      }
    });
  }

  // --- camera ----------------------------------------------------------------------------------

  let cameraVisible = false;
  let cameraTimer = null;
  let cameraOff = false;
  async function cameraTick() {
    cameraTimer = null;
    if (cameraOff || !cameraVisible || document.hidden) return;
    const img = $("camera-img");
    const note = $("camera-note");
    try {
      const res = await fetch(`/api/camera.jpg?t=${Date.now()}`, { credentials: "same-origin" });
      if (res.status === 401) return toLogin();
      if (res.status === 404) {
        cameraOff = true;
        img.hidden = true;
        note.hidden = false;
        note.dataset.i18n = "no_camera";
        note.textContent = t("no_camera");
        return;
      }
      if (res.ok) {
        const url = URL.createObjectURL(await res.blob());
        const old = img.src;
        img.src = url;
        img.hidden = false;
        note.hidden = true;
        if (old.startsWith("blob:")) URL.revokeObjectURL(old);
      } else {
        note.dataset.i18n = "no_frame";
        note.textContent = t("no_frame");
        note.hidden = false;
      }
    } catch {
      note.dataset.i18n = "network";
      note.textContent = t("network");
      note.hidden = false;
    }
    scheduleCamera();
  }
  function scheduleCamera() {
    if (cameraTimer === null && !cameraOff) cameraTimer = setTimeout(cameraTick, CAMERA_PERIOD_MS);
  }
  function watchCamera() {
    const section = $("s-camera");
    const observer = new IntersectionObserver((entries) => {
      cameraVisible = entries.some((e) => e.isIntersecting);
      if (cameraVisible) scheduleCamera();
    });
    observer.observe(section);
    document.addEventListener("visibilitychange", () => { if (!document.hidden) scheduleCamera(); });
  }

  // --- actions ---------------------------------------------------------------------------------

  let pending = null; // the action the dialog asks about
  function renderResult() {
    const result = $("action-result");
    if (!lastResult) return;
    const [key, body, fallback] = lastResult;
    const details = body && body.details ? detailsText(body.details) : "";
    result.textContent = `${t(key)}: ${(body && msg(body)) || fallback}${details}`;
  }
  function detailsText(details) {
    const parts = Object.entries(details)
      .filter(([k]) => !["ended", "passed"].includes(k)) // already in the sentence
      .map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(", ") : typeof v === "object" ? JSON.stringify(v) : v}`);
    return parts.length ? ` (${parts.join("; ")})` : "";
  }
  function openAction(button) {
    pending = { path: button.dataset.action, key: button.dataset.i18n, label: button.textContent };
    if (pending.path === "keep-open") pending.on = button.dataset.on !== "true";
    $("action-title").textContent = pending.label;
    $("justification").value = "";
    $("justification-hint").hidden = true;
    $("action-dialog").showModal();
    $("justification").focus();
  }
  async function confirmAction(ev) {
    ev.preventDefault();
    const justification = $("justification").value.trim();
    const hint = $("justification-hint");
    if (justification.length < 5) {
      hint.textContent = t("too_short");
      hint.hidden = false;
      return;
    }
    $("action-dialog").close();
    const result = $("action-result");
    result.hidden = false;
    result.className = "result";
    result.textContent = `${pending.label}: ${t("sending")}`;
    const body = { justification };
    if (pending.path === "keep-open") body.on = pending.on;
    const key = pending.key;
    try {
      const r = await api(`/api/actions/${pending.path}`, { method: "POST", body });
      const ok = r.ok && r.body && r.body.ok;
      result.className = `result ${ok ? "good" : "bad"}`;
      result.dataset.code = r.body ? r.body.code : String(r.status);
      lastResult = [key, r.body, String(r.status)];
    } catch {
      result.className = "result bad";
      lastResult = [key, null, t("network")];
    }
    renderResult();
    const s = await api("/api/status");
    if (s.ok) { status = s.body; renderStatus(); }
  }

  // --- journal ---------------------------------------------------------------------------------

  function isoOf(local) {
    return local ? new Date(local).toISOString() : "";
  }
  async function searchJournal(ev) {
    ev.preventDefault();
    const form = ev.target;
    const q = new URLSearchParams({ limit: "100" });
    if (form.ticket.value.trim()) q.set("ticket", form.ticket.value.trim());
    if (form.since.value) q.set("since", isoOf(form.since.value));
    if (form.until.value) q.set("until", isoOf(form.until.value));
    const r = await api(`/api/journal?${q}`);
    journalData = r.ok ? r.body : { error: r.body };
    renderJournal();
  }
  function renderJournal() {
    const box = $("journal-results");
    if (!box || !journalData) return;
    if (journalData.error) {
      box.replaceChildren(el("p", { class: "error", text: msg(journalData.error) }));
      return;
    }
    const { decisions: ds, actions } = journalData;
    const parts = [];
    if (!ds.length && !actions.length) parts.push(el("p", { class: "muted", text: t("no_results") }));
    if (ds.length) {
      parts.push(el("ol", { class: "rows journal" }, ...ds.map((d) => {
        const row = decisionRow(d);
        row.setAttribute("data-testid", "journal-decision");
        row.firstChild.textContent = stamp(d.at);
        return row;
      })));
    }
    if (actions.length) {
      parts.push(el("h3", { text: t("actions") }));
      parts.push(el("ol", { class: "rows journal" }, ...actions.map((a) =>
        el("li", { class: `row action ${a.ok ? "admit" : "deny"}`, "data-testid": "journal-action",
          "data-action": a.action },
          el("span", { class: "time", text: stamp(a.at) }),
          el("span", { class: "kind", text: window.SF_I18N[lang][`a_${a.action}`] ?? a.action }),
          el("span", { class: "outcome", text: a.username }),
          el("span", { class: "reason", text: a.justification || "–" }),
          el("span", { class: "ended", text: a.detail || "" })))));
    }
    box.replaceChildren(...parts);
  }

  // --- config ----------------------------------------------------------------------------------

  function tree(value, descriptions, path) {
    if (value !== null && typeof value === "object") {
      const list = el("ul");
      for (const [k, v] of Object.entries(value)) {
        const here = path ? `${path}.${k}` : k;
        const desc = descriptions && descriptions[here];
        const nested = v !== null && typeof v === "object" && Object.keys(v).length > 0;
        const key = el("span", { class: "k", text: k, title: desc || null });
        const item = nested
          ? el("li", {}, el("details", {}, el("summary", {}, key), tree(v, descriptions, here)))
          : el("li", {}, key, el("span", { class: "v", text: JSON.stringify(v) }));
        if (desc) item.append(el("div", { class: "desc", text: desc }));
        list.append(item);
      }
      return list;
    }
    return el("span", { class: "v", text: JSON.stringify(value) });
  }
  function renderConfig() {
    const box = $("config");
    if (!box || !configData) return;
    // config_view(): the settings tree, and (when the gate sends them) each field's description by dotted path.
    const values = configData.config ?? configData.values ?? configData;
    const descriptions = configData.descriptions ?? null;
    box.replaceChildren(tree(values, descriptions, ""));
  }

  // --- pages -----------------------------------------------------------------------------------

  async function indexPage() {
    const r = await api("/api/session");
    if (!r.ok) return toLogin();
    session = r.body;
    if (!localStorage.getItem("sf_lang") && session.lang) lang = session.lang;
    $("who").textContent = session.username;
    setLang(lang);
    wireLangToggle();
    $("logout").addEventListener("click", async () => {
      await api("/api/logout", { method: "POST", body: {}, noRedirect: true });
      location.replace("/login");
    });
    for (const b of document.querySelectorAll("[data-action]")) b.addEventListener("click", () => openAction(b));
    $("action-form").addEventListener("submit", confirmAction);
    $("action-cancel").addEventListener("click", () => $("action-dialog").close());
    $("journal-search").addEventListener("submit", searchJournal);
    const recent = await api("/api/decisions?limit=50");
    if (recent.ok) for (const d of recent.body.decisions.slice().reverse()) addDecision(d);
    renderDecisions();
    stream();
    pollStatus();
    watchCamera();
    const cfg = await api("/api/config");
    if (cfg.ok) { configData = cfg.body; renderConfig(); }
  }

  async function loginPage() {
    setLang(lang);
    wireLangToggle();
    const form = $("login-form");
    const error = $("login-error");
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      error.hidden = true;
      let r;
      try {
        r = await api("/api/login", { method: "POST", noRedirect: true,
          body: { username: form.username.value.trim(), password: form.password.value } });
      } catch {
        error.textContent = t("network");
        error.hidden = false;
        return;
      }
      if (r.ok) {
        location.replace("/");
        return;
      }
      error.textContent = msg(r.body) || t("login_failed"); // a lockout's sentence says when to try again
      error.dataset.code = r.body ? r.body.code : String(r.status);
      error.hidden = false;
      form.password.value = "";
      form.password.focus();
    });
    if ((await api("/api/session", { noRedirect: true })).ok) location.replace("/"); // already logged in
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (document.body.dataset.page === "login") loginPage();
    else indexPage();
  });
})();
