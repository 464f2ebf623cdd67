// Conveyor dashboard: sign in and out, and the run actions, through /api/v1.
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

  // A run that has not finished is followed: its summary is polled (every 2 s), and the
  // page is reloaded when the run changed (the browser keeps the scroll position).
  // A stream (SSE) per page is the next step; polling is its fallback anyway.
  function followRun(el) {
    var paused = false;
    var busy = false;
    var toggle = el.querySelector(".js-live-toggle");
    var state = el.querySelector(".live-state");
    toggle.addEventListener("click", function () {
      paused = !paused;
      el.classList.toggle("paused", paused);
      toggle.setAttribute("aria-pressed", paused ? "true" : "false");
      toggle.textContent = paused ? "Resume" : "Pause";
      state.textContent = paused ? "live updates paused" : "following the run live";
    });
    var timer = window.setInterval(function () {
      if (paused || busy) return;
      busy = true;
      fetch(prefix + "/api/v1/runs/" + el.dataset.run, { credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (run) {
          busy = false;
          if (!run) { state.textContent = "live updates paused (the server refused)"; return; }
          if (run.updated_at !== el.dataset.updated || run.status !== el.dataset.status) {
            window.clearInterval(timer);
            window.location.reload();
          }
        })
        .catch(function () { busy = false; });
    }, 2000);
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
      send("POST", form.dataset.endpoint, body)
        .then(function (op) { follow(op, progress); })
        .catch(function (err) { showError(errorSlot(form), err.message); });
    });
  }

  function follow(op, progress) {
    progress.hidden = false;
    progress.textContent = "Bulk " + op.kind + ": " + op.status + ", " + op.done + " of " +
      op.matched + " done" + (op.failed ? ", " + op.failed + " failed" : "");
    if (op.status === "completed" || op.status === "failed") {
      var again = document.createElement("a");
      again.href = window.location.href;
      again.textContent = " Show the list again";
      progress.appendChild(again);
      return;
    }
    window.setTimeout(function () {
      fetch(prefix + "/api/v1/bulk-operations/" + op.id, { credentials: "same-origin" })
        .then(function (response) { return response.json(); })
        .then(function (next) { follow(next, progress); });
    }, 1000);
  }

  document.querySelectorAll("form.js-bulk").forEach(onBulk);
  document.querySelectorAll(".live[data-run]").forEach(followRun);
  document.querySelectorAll("form.js-login").forEach(onLogin);
  document.querySelectorAll(".js-logout").forEach(onLogout);
  document.querySelectorAll("form.js-action").forEach(onAction);
  document.querySelectorAll(".js-localtime").forEach(onLocalTime);
  var saved = "";
  try { saved = window.localStorage.getItem("conveyor.localtime") || ""; } catch (e) { saved = ""; }
  if (saved) applyLocalTime(true);
})();
