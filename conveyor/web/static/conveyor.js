// Conveyor dashboard: sign in and out, the run actions, and live updates, through /api/v1.
// Loaded from /ui/static under a CSP without 'unsafe-inline' or 'unsafe-eval':
// no inline handlers, no eval, nothing from another origin.
(function () {
  "use strict";

  var prefix = document.body.dataset.prefix || "";

  function cookie(name) {
    var parts = document.cookie ? document.cookie.split("; ") : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf("=");
      if (parts[i].slice(0, eq) === name) return decodeURIComponent(parts[i].slice(eq + 1));
    }
    return "";
  }

  // Every write with the session cookie carries the CSRF token (issue 8).
  function send(method, url, body) {
    var headers = { "X-CSRF-Token": cookie("conveyor_csrf"), "Accept": "application/json" };
    var init = { method: method, headers: headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(url, init).then(function (response) {
      return response.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
        if (!response.ok) {
          var detail = data && (data.detail || data.title);
          throw new Error(detail || ("the server answered " + response.status));
        }
        return data;
      });
    });
  }

  function showError(el, message) {
    if (!el) return;
    el.textContent = message;
    el.hidden = false;
  }

  function errorSlot(form) {
    return form.querySelector(".form-error") ||
      (form.closest("section") && form.closest("section").querySelector(".form-error"));
  }

  function onLogin(form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var key = form.querySelector("[name=api_key]").value.trim();
      send("POST", prefix + "/api/v1/session", { api_key: key })
        .then(function () { window.location.assign(form.dataset.next || prefix + "/ui/runs"); })
        .catch(function (err) { showError(errorSlot(form), "Could not sign in: " + err.message); });
    });
  }

  function onLogout(button) {
    button.addEventListener("click", function () {
      send("DELETE", prefix + "/api/v1/session")
        .then(function () { window.location.assign(prefix + "/ui/login"); })
        .catch(function (err) { window.alert("Could not sign out: " + err.message); });
    });
  }

  // The body of an action form: reason, retry mode, step, payload, version, resend.
  function actionBody(form) {
    var body = {};
    var fields = new FormData(form);
    fields.forEach(function (value, name) {
      if (value === "") return;
      if (name === "resend") body.resend = true;
      else if (name === "payload") body.payload = JSON.parse(value);
      else body[name] = value;
    });
    return body;
  }

  function onAction(form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
      var body;
      try { body = actionBody(form); } catch (e) {
        showError(errorSlot(form), "The payload is not JSON: " + e.message);
        return;
      }
      var buttons = form.querySelectorAll("button");
      buttons.forEach(function (b) { b.disabled = true; });
      send("POST", form.dataset.endpoint, body)
        .then(function (run) {
          // A retry or replay is a new run: go to it. A cancel changes this one.
          var here = window.location.pathname.split("/").pop();
          if (run && run.id && run.id !== here) window.location.assign(prefix + "/ui/runs/" + run.id);
          else window.location.reload();
        })
        .catch(function (err) {
          buttons.forEach(function (b) { b.disabled = false; });
          showError(errorSlot(form), err.message);
        });
    });
  }

  // Times are shown in UTC; the toggle shows them in the browser's zone (kept per browser).
  function applyLocalTime(on) {
    document.querySelectorAll("time[datetime]").forEach(function (el) {
      if (!el.dataset.utc) el.dataset.utc = el.textContent;
      if (!on) { el.textContent = el.dataset.utc; return; }
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d.getTime())) return;
      var pad = function (n) { return String(n).padStart(2, "0"); };
      var offset = -d.getTimezoneOffset();
      var sign = offset >= 0 ? "+" : "-";
      el.textContent = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
        pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds()) + " " +
        sign + pad(Math.floor(Math.abs(offset) / 60)) + ":" + pad(Math.abs(offset) % 60);
    });
    document.querySelectorAll(".js-localtime").forEach(function (b) {
      b.setAttribute("aria-pressed", on ? "true" : "false");
      b.textContent = on ? "UTC" : "Local time";
    });
  }

  function onLocalTime(button) {
    button.addEventListener("click", function () {
      var on = button.getAttribute("aria-pressed") !== "true";
      try { window.localStorage.setItem("conveyor.localtime", on ? "1" : ""); } catch (e) { /* private mode */ }
      applyLocalTime(on);
    });
  }

  function localTimeOn() {
    var b = document.querySelector(".js-localtime");
    return !!b && b.getAttribute("aria-pressed") === "true";
  }

  function pad(n) { return String(n).padStart(2, "0"); }

  // A time as the pages' `when` filter writes it: UTC, to the second.
  function when(iso) {
    var d = new Date(iso);
    if (isNaN(d.getTime())) return String(iso);
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " +
      pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds()) + "Z";
  }

  // A duration as the pages' `duration` filter writes it.
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "—";
    if (seconds < 1) return Math.round(seconds * 1000) + " ms";
    if (seconds < 60) return seconds.toFixed(1) + " s";
    var minutes = Math.floor(Math.floor(seconds) / 60);
    if (minutes < 60) return minutes + " min " + (Math.floor(seconds) % 60) + " s";
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }

  function setTime(el, iso) {
    el.setAttribute("datetime", iso);
    el.textContent = when(iso);
    el.dataset.utc = el.textContent;
    if (localTimeOn()) applyLocalTime(true);
  }

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("the server answered " + response.status);
        return response.json();
      });
  }

  // This page again, as the server renders it now (a parsed document, nothing run).
  function fetchPage() {
    var url = window.location.pathname + window.location.search;
    return fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        // A redirect is the sign-in page (the session ended): not this page.
        if (response.redirected) throw new Error("signed out");
        if (!response.ok) throw new Error("the server answered " + response.status);
        return response.text();
      })
      .then(function (html) { return new DOMParser().parseFromString(html, "text/html"); });
  }

  // One live feed: an EventSource while the server accepts it; when it is refused
  // (a 429 too_many_streams, a 401), a poll every 5 s. start() (re)opens, stop() ends.
  function liveFeed(opts) {
    var source = null;
    var timer = null;
    function stop() {
      if (source) { source.close(); source = null; }
      if (timer) { window.clearInterval(timer); timer = null; }
    }
    function fallBack() {
      opts.state("live updates paused: the server refused the stream; checking every 5 s");
      if (!timer) timer = window.setInterval(opts.poll, 5000);
    }
    function start() {
      stop();
      opts.state(opts.liveText);
      var opened = new EventSource(opts.url(), { withCredentials: true });
      source = opened;
      Object.keys(opts.events).forEach(function (name) {
        opened.addEventListener(name, function (event) {
          var data;
          try { data = JSON.parse(event.data); } catch (e) { return; }
          opts.events[name](data);
        });
      });
      opened.onerror = function () {
        // CONNECTING: the browser reconnects by itself, sending Last-Event-ID.
        // CLOSED: the answer was not a stream (refused): poll instead.
        if (source === opened && opened.readyState === EventSource.CLOSED) {
          source = null;
          fallBack();
        }
      };
    }
    return { start: start, stop: stop };
  }

  // The Pause toggle of a live element: onChange(paused) closes or reopens the feed.
  function pauseToggle(el, paused, onChange) {
    var toggle = el.querySelector(".js-live-toggle");
    var show = function (on) {
      el.classList.toggle("paused", on);
      toggle.setAttribute("aria-pressed", on ? "true" : "false");
      toggle.textContent = on ? "Resume" : "Pause";
    };
    show(paused);
    toggle.addEventListener("click", function () {
      var on = toggle.getAttribute("aria-pressed") !== "true";
      show(on);
      onChange(on);
    });
  }

  // The runs list follows its runs: one stream of the list's filters. Rows shown are
  // updated in place; on the first page, runs created since it was rendered are counted
  // in a "N new runs" button (the table never moves by itself; the button reloads it).
  function followList(el) {
    var query = el.dataset.apiQuery;
    var cursor = el.dataset.cursor;
    var since = Date.parse(el.dataset.since);
    var banner = el.querySelector(".new-runs");
    var stateEl = el.querySelector(".live-state");
    var seen = {};
    var fresh = 0;
    function row(id) {
      return document.querySelector("table.runs tbody tr[data-run=\"" + CSS.escape(String(id)) + "\"]");
    }
    // A run's summary onto the page; true when it changed what the page shows.
    function apply(run) {
      var tr = row(run.id);
      if (tr) {
        var badge = tr.querySelector(".badge");
        var took = tr.querySelector("td.duration");
        var changed = badge.textContent !== run.status || took.textContent !== duration(run.duration_seconds);
        badge.className = "badge s-" + run.status;
        badge.textContent = run.status;
        took.textContent = duration(run.duration_seconds);
        var time = tr.querySelector("time");
        var at = run.started_at || run.created_at;
        if (time && at && time.getAttribute("datetime") !== at) { setTime(time, at); changed = true; }
        return changed;
      }
      if (cursor || seen[run.id] || !(Date.parse(run.created_at) > since)) return false;
      seen[run.id] = true;
      fresh += 1;
      banner.textContent = fresh + " new run" + (fresh === 1 ? "" : "s");
      banner.hidden = false;
      return true;
    }
    // The counts above the table (matching runs, and what a bulk operation would act
    // on, which its confirmation names) follow the changes too, at most every 5 s.
    var countsDue = null;
    var countsAt = 0;
    function counts() {
      if (countsDue) return;
      var wait = Math.max(1000, countsAt + 5000 - Date.now());
      countsDue = window.setTimeout(function () {
        fetchPage()
          .then(function (doc) { refreshCounts(doc); })
          .catch(function () { /* shown at the next change */ })
          .then(function () { countsAt = Date.now(); countsDue = null; });
      }, wait);
    }
    function poll() {
      var params = query ? query + "&" : "";
      params += cursor ? "limit=50&cursor=" + encodeURIComponent(cursor) : "limit=20";
      getJSON(prefix + "/api/v1/runs?" + params)
        .then(function (page) {
          // Polled summaries are snapshots: only a difference is a change.
          if (page.items.map(apply).indexOf(true) >= 0) counts();
        })
        .catch(function (err) { state("live updates paused: " + err.message); });
    }
    function state(text) {
      stateEl.textContent = text;
      el.classList.toggle("degraded", text !== "following the list live" && text !== "live updates paused");
    }
    var feed = liveFeed({
      url: function () { return prefix + "/api/v1/runs/stream" + (query ? "?" + query : ""); },
      events: { run: function (run) { apply(run); counts(); } },
      poll: poll,
      state: state,
      liveText: "following the list live",
    });
    banner.addEventListener("click", function () {
      window.scrollTo(0, 0);
      window.location.reload();
    });
    pauseToggle(el, false, function (paused) {
      if (paused) { feed.stop(); state("live updates paused"); return; }
      poll();  // what changed while paused
      feed.start();
    });
    feed.start();
  }

  var TERMINAL = ["run.completed", "run.completed-with-errors", "run.failed", "run.exhausted",
    "run.timed-out", "run.cancelled"];
  // The history's line types (each SSE event is named by its type). A line of a type
  // not listed leaves a gap in the seq, filled from the JSON history at the next line.
  var LINE_TYPES = TERMINAL.concat(["run.created", "run.queued", "run.started", "run.waiting",
    "run.resumed", "run.yielded", "run.retried", "run.repaired", "run.erased", "run.poisoned",
    "step.started", "step.completed", "step.failed", "step.waiting", "step.resumed",
    "step.skipped", "step.cancelled", "step.reused", "step.branch", "step.retry_scheduled",
    "step.attempt_lost", "step.output_cleaned", "wait.started", "wait.received",
    "wait.timed_out", "wait.cancelled", "wait.late_event_ignored", "child_run.started",
    "message"]);

  function historyTable() { return document.querySelector("table.history"); }

  function lastShown() {
    var rows = historyTable().querySelectorAll("tbody tr[data-seq]");
    return rows.length ? Number(rows[rows.length - 1].dataset.seq) : 0;
  }

  function cell(tr, text) {
    var td = document.createElement("td");
    td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  function child(td, tag, text, className) {
    var el = document.createElement(tag);
    if (className) el.className = className;
    el.textContent = text;
    td.appendChild(el);
    return el;
  }

  // A history line as the page's table shows it, appended when it follows the last one.
  function appendLine(line) {
    var table = historyTable();
    if (!table || table.dataset.complete !== "1" || line.seq !== lastShown() + 1) return;
    var tr = document.createElement("tr");
    tr.dataset.seq = String(line.seq);
    cell(tr, String(line.seq));
    setTime(child(cell(tr, ""), "time", ""), line.created_at);
    child(cell(tr, ""), "code", line.type);
    cell(tr, line.step_key || "");
    var data = cell(tr, "");
    if (line.data && Object.keys(line.data).length) child(data, "code", JSON.stringify(line.data), "data");
    table.tBodies[0].appendChild(tr);
  }

  // What the reader was doing in <main>: open <details> and typed fields, by a stable key.
  function fieldKey(field) {
    var form = field.form;
    var hidden = form ? Array.prototype.map.call(
      form.querySelectorAll("input[type=hidden]"), function (h) { return h.value; }).join("|") : "";
    return (form ? form.dataset.endpoint : "") + "|" + hidden + "|" + field.name;
  }

  function detailsKey(d) {
    var at = d.parentElement && d.parentElement.closest("[id]");
    var summary = d.querySelector("summary");
    return (at ? at.id : "") + "|" + (summary ? summary.textContent : "");
  }

  function carryOver(from, to) {
    var open = {};
    from.querySelectorAll("details[open]").forEach(function (d) { open[detailsKey(d)] = true; });
    to.querySelectorAll("details").forEach(function (d) { if (open[detailsKey(d)]) d.open = true; });
    var typed = {};
    from.querySelectorAll("form.js-action input:not([type=hidden]), form.js-action textarea, form.js-action select")
      .forEach(function (f) { typed[fieldKey(f)] = f.type === "checkbox" ? f.checked : f.value; });
    to.querySelectorAll("form.js-action input:not([type=hidden]), form.js-action textarea, form.js-action select")
      .forEach(function (f) {
        var value = typed[fieldKey(f)];
        if (value === undefined) return;
        if (f.type === "checkbox") f.checked = value; else f.value = value;
      });
  }

  // A run that has not finished is followed: its history as a stream (new lines are
  // appended), and the page's <main> redrawn from the server when a line came (the
  // scroll position, open sections and typed fields are kept; while a field has the
  // focus the redraw waits). The stream is closed after the terminal line.
  function followRun(el) {
    var base = prefix + "/api/v1/runs/" + el.dataset.run + "/events";
    var seen = lastShown();
    var paused = false;
    var ended = false;
    var stateText = "following the run live";
    var redrawing = false;
    var again = false;
    var pending = null;

    function live() { return document.querySelector(".live[data-run]"); }
    function state(text) {
      stateText = text;
      var controls = live();
      if (!controls) return;
      controls.querySelector(".live-state").textContent = text;
      controls.classList.toggle("degraded", text !== "following the run live" && text !== "live updates paused");
    }

    function catchUp(after) {
      getJSON(base + "?after=" + after + "&limit=1000")
        .then(function (page) { page.items.forEach(appendLine); })
        .catch(function () { /* the redraw shows the history anyway */ });
    }

    function onLine(line) {
      if (line.seq <= seen) return;
      if (line.seq > seen + 1) catchUp(seen); else appendLine(line);
      seen = line.seq;
      if (TERMINAL.indexOf(line.type) >= 0) { ended = true; feed.stop(); }
      soon();
    }

    function poll() {
      getJSON(base + "?after=" + seen + "&limit=1000")
        .then(function (page) { page.items.forEach(onLine); })
        .catch(function (err) { state("live updates paused: " + err.message); });
    }

    function soon() {
      window.clearTimeout(pending);
      pending = window.setTimeout(redraw, 250);
    }

    function redraw() {
      if (redrawing) { again = true; return; }
      var main = document.querySelector("main");
      var active = document.activeElement;
      if (active && main.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)) {
        active.addEventListener("blur", soon, { once: true });
        return;
      }
      redrawing = true;
      fetchPage()
        .then(function (doc) {
          var fresh = doc.querySelector("main");
          var now = document.querySelector("main");
          if (!fresh || !now) return;
          carryOver(now, fresh);
          now.replaceWith(fresh);
          bindAll(fresh);
          if (localTimeOn()) applyLocalTime(true);
          var controls = live();
          if (controls) {
            pauseToggle(controls, paused, toggled);
            state(paused ? "live updates paused" : stateText);
          } else {
            ended = true;
            feed.stop();
          }
        })
        .catch(function (err) { state("live updates paused: " + err.message); })
        .then(function () {
          redrawing = false;
          if (again) { again = false; soon(); }
        });
    }

    var events = {};
    LINE_TYPES.forEach(function (type) { events[type] = onLine; });
    var feed = liveFeed({
      url: function () { return base + "?after=" + seen; },
      events: events,
      poll: poll,
      state: state,
      liveText: "following the run live",
    });
    function toggled(on) {
      paused = on;
      if (on) { feed.stop(); state("live updates paused"); } else if (!ended) feed.start();
    }
    pauseToggle(el, false, toggled);
    feed.start();
  }

  // Bulk cancel or replay over everything the list's filters match (not only this
  // page): confirmed with the count, then the operation's progress, polled.
  function onBulk(form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var kind = form.dataset.kind;
      var what = (kind === "cancel" ? "Cancel " : "Replay ") + form.dataset.count +
        " run(s) matching these filters?";
      if (!window.confirm(what)) return;
      var section = form.closest("section");
      var progress = section.querySelector(".bulk-progress");
      var body = { filters: JSON.parse(form.dataset.filters) };
      var reason = form.querySelector("[name=reason]").value.trim();
      if (reason) body.reason = reason;
      section.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
      section.dataset.busy = "1";
      send("POST", form.dataset.endpoint, body)
        .then(function (op) { follow(op, progress); })
        .catch(function (err) {
          delete section.dataset.busy;
          showError(errorSlot(form), err.message);
        });
    });
  }

  function follow(op, progress) {
    progress.hidden = false;
    progress.textContent = "Bulk " + op.kind + ": " + op.status + ", " + op.done + " of " +
      op.matched + " done" + (op.failed ? ", " + op.failed + " failed" : "");
    if (op.status === "completed" || op.status === "failed") {
      refreshList(progress);
      return;
    }
    window.setTimeout(function () {
      getJSON(prefix + "/api/v1/bulk-operations/" + op.id)
        .then(function (next) { follow(next, progress); })
        .catch(function (err) { progress.textContent += " (" + err.message + ")"; });
    }, 1000);
  }

  // The count of matching runs and the bulk buttons' counts as `doc` (the page as the
  // server renders it now) has them; the reason typed stays. Not while an operation runs.
  function refreshCounts(doc) {
    var section = document.querySelector("section.bulk");
    if (section && section.dataset.busy) return;
    var fresh = doc.querySelector(".list-head .count");
    var now = document.querySelector(".list-head .count");
    if (fresh && now) now.textContent = fresh.textContent;
    doc.querySelectorAll("form.js-bulk").forEach(function (form) {
      var mine = document.querySelector("form.js-bulk[data-kind=\"" + form.dataset.kind + "\"]");
      if (!mine) return;
      mine.dataset.count = form.dataset.count;
      mine.dataset.filters = form.dataset.filters;
      var button = mine.querySelector("button");
      var theirs = form.querySelector("button");
      button.textContent = theirs.textContent;
      button.disabled = theirs.disabled;
    });
  }

  // After a bulk operation: the list's rows, its count and the bulk buttons' counts,
  // as the server shows them now (the progress line stays).
  function refreshList(progress) {
    delete document.querySelector("section.bulk").dataset.busy;
    fetchPage()
      .then(function (doc) {
        var fresh = doc.querySelector("table.runs tbody");
        var now = document.querySelector("table.runs tbody");
        if (fresh && now) now.replaceWith(fresh);
        refreshCounts(doc);
        if (localTimeOn()) applyLocalTime(true);
        progress.textContent += "; the list is up to date";
      })
      .catch(function () {
        var again = document.createElement("a");
        again.href = window.location.href;
        again.textContent = " Show the list again";
        progress.appendChild(again);
      });
  }

  // Everything in `root` that acts: forms (also after a redraw swapped them in).
  function bindAll(root) {
    root.querySelectorAll("form.js-bulk").forEach(onBulk);
    root.querySelectorAll("form.js-login").forEach(onLogin);
    root.querySelectorAll("form.js-action").forEach(onAction);
  }

  bindAll(document);
  document.querySelectorAll(".js-logout").forEach(onLogout);
  document.querySelectorAll(".js-localtime").forEach(onLocalTime);
  var saved = "";
  try { saved = window.localStorage.getItem("conveyor.localtime") || ""; } catch (e) { saved = ""; }
  if (saved) applyLocalTime(true);
  document.querySelectorAll(".live[data-run]").forEach(followRun);
  document.querySelectorAll(".live-list[data-api-query]").forEach(followList);
})();
