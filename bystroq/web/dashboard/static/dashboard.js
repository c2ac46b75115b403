// bystroq dashboard: keeps states and progress bars current without a reload.
// Follows /v1/events (server-sent events) while the tab is visible; falls back to
// polling when the stream cannot be had; stops both while the tab is hidden.
"use strict";
(function () {
  const body = document.body;
  const api = body.dataset.api;
  const live = body.dataset.live;
  const shown = document.getElementById("live-state");
  const POLL_MS = 5000;
  const FLUSH_MS = 250;
  let source = null;
  let pollTimer = null;
  let refreshTimer = null;
  let flushTimer = null;
  let failures = 0;
  const dueSubmissions = new Set();
  const dueBatches = new Set();

  function say(text) { if (shown) shown.textContent = text; }

  // The record key of a submissionID (as bystroq.messages.record_key).
  function recordKey(id) {
    if (typeof id === "number") return String(id);
    if (/^-?(0|[1-9][0-9]*)$/.test(id) || id.startsWith('"')) return JSON.stringify(id);
    return id;
  }

  function duration(seconds) {
    const s = Math.round(seconds);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function setText(root, field, text) {
    root.querySelectorAll('[data-field="' + field + '"]').forEach(function (el) {
      el.textContent = text;
    });
  }

  function setBar(bar, percent) {
    if (!bar || percent === null || percent === undefined) return;
    bar.hidden = false;
    bar.setAttribute("value", String(percent));
    bar.value = percent;
    bar.textContent = percent + "%";
  }

  function setBadge(root, state) {
    root.querySelectorAll('[data-field="state"]').forEach(function (el) {
      el.textContent = state;
      el.className = "badge state-" + state;
    });
  }

  function rootsOf(attribute, key) {
    return Array.from(document.querySelectorAll("[" + attribute + "]")).filter(function (el) {
      return el.getAttribute(attribute) === key;
    });
  }

  function showSubmission(s) {
    rootsOf("data-submission", recordKey(s.submissionID)).forEach(function (root) {
      setBadge(root, s.state);
      const percent = s.percent !== null ? s.percent : (s.state === "completed" ? 100 : null);
      setBar(root.querySelector('[data-field="progress"] progress'), percent);
      setText(root, "percent", s.percent !== null ? s.percent + "%"
        : (s.progress ? s.progress + " done" : ""));
      setText(root, "eta", s.etaS !== null ? "ETA " + duration(s.etaS) : "");
      setText(root, "attempts", String(s.attempts));
      setText(root, "worker", s.worker || "-");
      setText(root, "reason", (s.reason || "").slice(0, 120));
    });
  }

  function showBatch(b) {
    rootsOf("data-batch", b.batch.batchID).forEach(function (root) {
      const badge = root.querySelector('[data-field="state"]');
      // A batch's own page shows its end (finished time, buttons): read it again then.
      if (live === "batch" && badge && badge.textContent !== b.batch.state) {
        setTimeout(reloadMain, FLUSH_MS);
      }
      setBadge(root, b.batch.state);
      // Every job done, the batch not yet ended: its end comes without an event.
      if (b.batch.state === "running" && b.done >= b.batch.total) {
        setTimeout(function () { dueBatches.add(b.batch.batchID); schedule(); }, 1000);
      }
      const percent = Math.round(b.percent * 10) / 10;
      setBar(root.querySelector('[data-field="batch-progress"] progress'), percent);
      setText(root, "percent", percent.toFixed(1) + "%");
      setText(root, "done", b.done + "/" + b.batch.total);
      setText(root, "eta", b.etaS !== null ? "ETA " + duration(b.etaS) : "");
      setText(root, "rate", b.ratePerS ? b.ratePerS.toFixed(1) + "/s" : "-");
      setText(root, "failed", String(b.counts.failed || 0));
      root.querySelectorAll("[data-count]").forEach(function (el) {
        el.textContent = String(b.counts[el.dataset.count] || 0);
      });
    });
  }

  function getJSON(path) {
    return fetch(api + path, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(path + ": " + r.status); return r.json(); });
  }

  function flush() {
    flushTimer = null;
    dueSubmissions.forEach(function (key) {
      getJSON("submissions/" + encodeURIComponent(key))
        .then(function (d) { showSubmission(d.submission); }, function () {});
    });
    dueBatches.forEach(function (id) {
      getJSON("batches/" + encodeURIComponent(id)).then(showBatch, function () {});
    });
    dueSubmissions.clear();
    dueBatches.clear();
  }

  function schedule() { if (flushTimer === null) flushTimer = setTimeout(flush, FLUSH_MS); }

  function refreshAll() {
    document.querySelectorAll("[data-submission]").forEach(function (el) {
      dueSubmissions.add(el.getAttribute("data-submission"));
    });
    document.querySelectorAll("[data-batch]").forEach(function (el) {
      dueBatches.add(el.getAttribute("data-batch"));
    });
    schedule();
  }

  // Pages without per-item updates (overview) are fetched again and their main swapped.
  function reloadMain() {
    fetch(location.href, { credentials: "same-origin" }).then(function (r) { return r.text(); })
      .then(function (html) {
        const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("main");
        const main = document.getElementById("main");
        if (fresh && main && !main.contains(document.activeElement)) main.innerHTML = fresh.innerHTML;
      }, function () {});
  }

  function pollTask() {
    fetch(body.dataset.task, { credentials: "same-origin" }).then(function (r) { return r.json(); })
      .then(function (p) {
        const bar = document.getElementById("task-progress");
        if (bar) { bar.max = Math.max(p.total, p.done, 1); bar.setAttribute("value", String(p.done)); bar.value = p.done; }
        const text = document.getElementById("task-text");
        if (text) text.textContent = p.done + " of " + p.total + " looked at: " + p.acted +
          " done, " + p.skipped + " no longer buried, " + p.errors + " errors";
        const state = document.getElementById("task-state");
        if (state) state.textContent = p.finished ? "finished" : "running";
        if (p.finished) stop();
      }, function () {});
  }

  function onEvent(message) {
    let event;
    try { event = JSON.parse(message.data); } catch (e) { return; }
    failures = 0;
    if (live === "overview") { dueSubmissions.clear(); if (flushTimer === null) flushTimer = setTimeout(function () { flushTimer = null; reloadMain(); }, 1000); return; }
    // A submission's page shows its timeline, result and buttons too: read them again
    // when its state changes (progress alone only moves the bar).
    if (live === "submission" && event.event !== "progress") {
      if (flushTimer === null) flushTimer = setTimeout(function () { flushTimer = null; reloadMain(); }, FLUSH_MS);
      return;
    }
    const key = recordKey(event.submissionID);
    if (rootsOf("data-submission", key).length) dueSubmissions.add(key);
    if (event.batch && rootsOf("data-batch", event.batch).length) dueBatches.add(event.batch);
    schedule();
  }

  function poll() {
    pollTimer = setInterval(function () {
      if (live === "task") pollTask();
      else if (live === "overview") reloadMain();
      else refreshAll();
    }, live === "task" ? 1000 : POLL_MS);
  }

  function streamPath() {
    const key = body.dataset.key;
    if (live === "submission") return "events?submission=" + encodeURIComponent(key);
    if (live === "batch") return "events?batch=" + encodeURIComponent(key);
    return "events";
  }

  function start() {
    if (!live) return;
    // Heartbeats and tube counts change without events: such pages read themselves again.
    if (live === "overview" || live === "refresh") refreshTimer = setInterval(reloadMain, POLL_MS);
    if (live === "refresh") { say("on (every " + POLL_MS / 1000 + " s)"); return; }
    if (live === "task" || typeof EventSource === "undefined") { say("on (polling)"); poll(); return; }
    source = new EventSource(api + streamPath(), { withCredentials: true });
    ["started", "progress", "completed", "failed", "retrying", "cancelled"].forEach(function (name) {
      source.addEventListener(name, onEvent);
    });
    // What changed between the page's rendering and the stream's start is read once.
    source.onopen = function () { failures = 0; say("on"); refreshAll(); };
    source.onerror = function () {
      failures += 1;
      if (source.readyState === EventSource.CLOSED || failures > 3) {
        source.close();
        source = null;
        say("on (polling)");
        if (pollTimer === null) poll();
      }
    };
  }

  function stop() {
    if (source !== null) { source.close(); source = null; }
    if (pollTimer !== null) { clearInterval(pollTimer); pollTimer = null; }
    if (refreshTimer !== null) { clearInterval(refreshTimer); refreshTimer = null; }
  }

  document.addEventListener("visibilitychange", function () {
    if (document.hidden) { stop(); say("paused (tab hidden)"); }
    else { refreshAll(); start(); }
  });
  if (!document.hidden) start();
  else say("paused (tab hidden)");
})();
