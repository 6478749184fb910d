// jetpost console: renders the snapshots the worker streams (server-sent
// events) and sends actions with the token kept in sessionStorage.
"use strict";
(function () {
  const KEY = "jetpost-console-token";
  const $ = (sel) => document.querySelector(sel);
  let snap = null;
  let dlqBatch = "";

  function el(tag, text, attrs) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else e.setAttribute(k, v);
    }
    return e;
  }
  const num = (n) => Number(n).toLocaleString("en-US");
  function duration(s) {
    if (s === undefined || s === null || !isFinite(s)) return "-";
    s = Math.round(s);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    if (h > 0) return h + "h " + String(m).padStart(2, "0") + "m";
    if (m > 0) return m + "m " + String(r).padStart(2, "0") + "s";
    return r + "s";
  }
  const token = () => sessionStorage.getItem(KEY) || "";
  const unlocked = () => !!(snap && snap.actions && token());

  function say(text, bad, data) {
    const m = $("#message");
    m.hidden = false;
    m.textContent = text;
    m.className = bad ? "bad" : "";
    for (const k of Object.keys(m.dataset)) delete m.dataset[k];
    Object.assign(m.dataset, data || {});
  }

  // cell makes a table cell whose raw value tests and scripts can read.
  function cell(field, text, value, cls) {
    const td = el("td", text, { "data-field": field, class: cls || "" });
    if (value !== undefined) td.dataset.value = String(value);
    return td;
  }

  function batchRow(b) {
    const tr = el("tr", null, { "data-batch": b.batch, class: b.active ? "" : "inactive" });
    tr.append(el("th", b.batch, { scope: "row" }));
    tr.append(cell("state", b.state, b.state, "state state-" + b.state));
    tr.append(cell("priority", b.priority + " (" + b.weight + ")", b.priority));
    tr.append(cell("share", b.share > 0 ? Math.round(100 * b.share) + "%" : "-", b.share));
    const done = b.total > 0 ? b.results / b.total : 1;
    const p = el("td", null, { "data-field": "progress", class: "progress" });
    const bar = el("progress", null, { max: "1", value: String(done), "aria-label": "progress of " + b.batch });
    const inner = el("div");
    inner.append(bar, el("span", num(b.results) + " / " + num(b.total) + " (" + Math.floor(100 * done) + "%)"));
    p.append(inner);
    p.dataset.value = String(done);
    tr.append(p);
    tr.append(cell("open", num(b.open), b.open, "n"));
    tr.append(cell("in_flight", num(b.in_flight), b.in_flight, "n"));
    tr.append(cell("results_per_second", b.results_per_second.toFixed(1), b.results_per_second, "n"));
    tr.append(cell("eta", duration(b.eta_seconds), b.eta_seconds === undefined ? "" : b.eta_seconds, "n"));
    tr.append(cell("results", num(b.results), b.results, "n"));
    const c = b.cancelled === undefined ? "-" : num(b.cancelled) + (b.cancelled_partial ? "+" : "");
    tr.append(cell("cancelled", c, b.cancelled === undefined ? "" : b.cancelled, "n"));
    tr.append(cell("dead_letters", num(b.dead_letters), b.dead_letters, "n"));
    tr.append(actionsCell(b));
    return tr;
  }

  function actionsCell(b) {
    const td = el("td", null, { class: "acts" });
    const box = el("div");
    td.append(box);
    if (b.dead_letters > 0) {
      const d = el("button", "Dead letters", { type: "button", "data-dlq": b.batch });
      d.addEventListener("click", () => showDLQ(b.batch));
      box.append(d);
    }
    if (!unlocked()) return td;
    const add = (action, label) => {
      const btn = el("button", label, { type: "button", class: "act", "data-action": action, "aria-label": label + " batch " + b.batch });
      btn.addEventListener("click", () => act(action, b.batch, btn));
      box.append(btn);
    };
    if (b.state === "running" || b.state === "done") add("pause", "Pause");
    if (b.state === "paused" || b.state === "cancelled") add("resume", "Resume");
    if (b.state !== "cancelled") add("cancel", "Cancel");
    return td;
  }

  function hostRow(h) {
    const tr = el("tr", null, { "data-host": h.host, "data-worker": h.worker });
    tr.append(el("th", h.host, { scope: "row" }), cell("worker", h.worker));
    tr.append(cell("limit", h.limit ? h.limit + (h.adaptive ? " adaptive" : " fixed") : "-", h.limit, "n"));
    tr.append(cell("in_flight", num(h.in_flight), h.in_flight, "n"), cell("waiting", num(h.waiting), h.waiting, "n"));
    tr.append(cell("latency", h.latency_ms > 0 ? h.latency_ms.toFixed(1) + " ms" : "-", h.latency_ms, "n"));
    tr.append(cell("rate_limit", h.rate_limit || "-", h.rate_limit || ""));
    const since = h.breaker_since ? " since " + new Date(h.breaker_since).toLocaleTimeString() : "";
    tr.append(cell("breaker", h.breaker.toUpperCase() + since, h.breaker, "breaker-" + h.breaker));
    tr.append(cell("admitted", num(h.admitted), h.admitted, "n"), cell("refused", num(h.refused), h.refused, "n"));
    return tr;
  }

  // emptyRow says a table has nothing (append returns nothing: no chains).
  function emptyRow(text, cols) {
    const tr = el("tr", null, { class: "empty" });
    tr.append(el("td", text, { colspan: String(cols) }));
    return tr;
  }

  function render(s) {
    snap = s;
    document.body.dataset.actions = s.actions ? "on" : "off";
    $("#actions-off").hidden = s.actions;
    $("#auth").hidden = !s.actions;
    $("#token").hidden = $("#unlock").hidden = $("#auth label").hidden = !!token();
    $("#lock").hidden = !token();
    const at = new Date(s.at);
    $("#live").textContent = "live: updated " + at.toLocaleTimeString() + " by worker " + s.worker;
    $("#live").className = "";
    document.body.dataset.updated = s.at;
    $("#batches tbody").replaceChildren(...(s.batches || []).map(batchRow));
    if (!s.batches || !s.batches.length) {
      $("#batches tbody").append(emptyRow("No batches stored.", 13));
    }
    const more = $("#more-batches");
    more.hidden = !s.more_batches;
    more.textContent = s.more_batches ? s.more_batches + " older batches not shown: enqueue status lists them all." : "";
    $("#totals").textContent = "Consumers: " + num(s.lag) + " not yet delivered (lag), " + num(s.unacked) +
      " delivered and unsettled, " + num(s.pulls_waiting) + " pull requests waiting" +
      (s.rate_window_ms ? "; results/s measured over " + (s.rate_window_ms / 1000).toFixed(1) + "s" : "") + ".";
    $("#hosts tbody").replaceChildren(...(s.hosts || []).map(hostRow));
    if (!s.hosts || !s.hosts.length) {
      $("#hosts tbody").append(emptyRow("No host limits posted yet.", 10));
    }
    $("#workers").textContent = (s.workers || []).length + " workers on the limits board: " +
      (s.workers || []).map((w) => w.worker).join(", ");
    const warn = $("#warnings");
    warn.replaceChildren(...(s.warnings || []).map((w) => el("li", "warning: " + w)));
    warn.hidden = !(s.warnings || []).length;
    $("#dlq-redrive").hidden = !unlocked();
  }

  async function post(path) {
    const resp = await fetch(path, { method: "POST", headers: { Authorization: "Bearer " + token() } });
    let body = {};
    try { body = await resp.json(); } catch (e) { body = { error: resp.statusText }; }
    if (resp.status === 401) {
      sessionStorage.removeItem(KEY);
      if (snap) render(snap);
    }
    if (!resp.ok) throw new Error(body.error || resp.statusText);
    return body;
  }

  function controlText(r) {
    const workers = ((r.fence && r.fence.replies) || []).length + " workers confirmed";
    const running = r.fence && r.fence.running ? ", " + r.fence.running + " requests in flight finishing" : "";
    let text;
    if (r.action === "pause") text = "batch " + r.batch + " paused: " + num(r.open) + " open jobs held; " + workers + running;
    else if (r.action === "resume") text = "batch " + r.batch + " resumed (priority " + r.priority + "): " + num(r.open) + " open jobs to run; " + workers;
    else text = "batch " + r.batch + " cancelled: nothing more of it is sent; " + num(r.open) + " jobs were open; " + workers;
    return text + controlWarnings(r).map(function (w) { return ". WARNING: " + w; }).join("");
  }

  // controlWarnings is what enqueue pause, resume and cancel warn about:
  // workers that did not confirm the change, what failed on the way, a
  // cancel that stopped waiting for running jobs.
  function controlWarnings(r) {
    const out = [];
    const missing = (r.fence && r.fence.missing) || [];
    if (missing.length) out.push("no confirmation from " + missing.join(", ") + " (they apply the change when they next read the batch's state)");
    for (const w of r.warnings || []) out.push(w);
    if (r.timed_out) out.push("stopped waiting for the batch's running jobs; they finish and store their results");
    return out;
  }

  async function act(action, batch, btn) {
    if (action === "cancel" && !confirm("Cancel batch " + batch + "? Every open job ends with a cancelled result.")) return;
    if (btn) btn.disabled = true;
    say(action + " " + batch + "…", false, { state: "pending", action: action, batch: batch });
    try {
      const r = await post("/api/batches/" + encodeURIComponent(batch) + "/" + action);
      say(controlText(r), controlWarnings(r).length > 0, { state: "done", action: action, batch: batch, running: String((r.fence && r.fence.running) || 0), confirmed: String(((r.fence && r.fence.replies) || []).length) });
    } catch (e) {
      say(action + " " + batch + " failed: " + e.message, true, { state: "failed", action: action, batch: batch });
    } finally {
      if (btn) btn.disabled = false;
    }
  }

  async function showDLQ(batch) {
    dlqBatch = batch;
    $("#dlq").hidden = false;
    $("#dlq-batch").textContent = batch;
    $("#dlq-note").textContent = "loading…";
    try {
      const resp = await fetch("/api/deadletters/" + encodeURIComponent(batch));
      const d = await resp.json();
      if (!resp.ok) throw new Error(d.error || resp.statusText);
      $("#dlq-table tbody").replaceChildren(...d.dead_letters.map((x) => {
        const tr = el("tr", null, { "data-seq": String(x.seq) });
        const req = (x.method || "") + " " + (x.url || "");
        tr.append(cell("seq", x.seq, x.seq, "n"), cell("id", x.id), cell("source", x.source || "-"),
          cell("reason", x.reason), cell("status", x.last_status, x.last_status, "n"),
          cell("attempts", x.last_attempts, x.last_attempts, "n"), cell("error", x.message || "-", undefined, "err"), cell("request", req));
        return tr;
      }));
      $("#dlq-note").textContent = d.dead_letters.length + " shown" + (d.more ? "; more are stored: enqueue dlq " + batch + " lists them all" : "") + ". Secrets are redacted.";
    } catch (e) {
      $("#dlq-note").textContent = "could not list: " + e.message;
    }
  }

  async function redrive() {
    if (!dlqBatch || !confirm("Re-drive every dead letter of batch " + dlqBatch + "?")) return;
    try {
      const r = await post("/api/batches/" + encodeURIComponent(dlqBatch) + "/redrive");
      say("batch " + dlqBatch + ": " + r.Redriven + " jobs re-driven, " + (r.Skipped || []).length + " skipped, " + r.Callbacks + " callbacks re-sent", false,
        { state: "done", action: "redrive", batch: dlqBatch });
      showDLQ(dlqBatch);
    } catch (e) {
      say("re-drive " + dlqBatch + " failed: " + e.message, true, { state: "failed", action: "redrive", batch: dlqBatch });
    }
  }

  function start() {
    $("#auth").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const t = $("#token").value.trim();
      if (t) sessionStorage.setItem(KEY, t);
      $("#token").value = "";
      if (snap) render(snap);
    });
    $("#lock").addEventListener("click", () => { sessionStorage.removeItem(KEY); if (snap) render(snap); });
    $("#dlq-refresh").addEventListener("click", () => showDLQ(dlqBatch));
    $("#dlq-close").addEventListener("click", () => { $("#dlq").hidden = true; dlqBatch = ""; });
    $("#dlq-redrive").addEventListener("click", redrive);
    const es = new EventSource("/events");
    es.addEventListener("snapshot", (ev) => render(JSON.parse(ev.data)));
    es.onerror = () => { $("#live").textContent = "disconnected: reconnecting…"; $("#live").className = "down"; };
  }
  start();
})();
