/* Campaign pages of the staff console: live preview while composing, live progress
   while sending. Self-hosted, no dependencies; every page works without it. */
(function () {
  "use strict";

  /* Live preview: after a pause in typing, the draft is posted twice: through the
     form's Preview button into the sandboxed iframe (the HTML document comes with
     its own CSP), and with fetch for the plain-text part. Nothing is saved. */
  function livePreview(form) {
    var button = form.querySelector("button[data-preview]");
    var textBox = document.getElementById("preview-text");
    var status = document.getElementById("preview-status");
    var timer = null;
    var pending = null;
    var frames = 0;

    function say(message) {
      if (status) { status.textContent = message; }
    }

    /* Each preview goes into a new iframe that replaces the old one once loaded:
       a form posted into the same iframe would add an entry to the browser's
       history on every pause in typing, and Back would step through them. */
    function freshFrame() {
      var old = document.querySelector("iframe.mail-preview");
      var frame = old.cloneNode(false);
      frames += 1;
      frame.name = "campaign-preview-" + frames;
      frame.removeAttribute("src");
      frame.hidden = true;
      old.after(frame);
      frame.addEventListener("load", function () {
        frame.hidden = false;
        document.querySelectorAll("iframe.mail-preview").forEach(function (other) {
          if (other !== frame) { other.remove(); }
        });
      }, { once: true });
      button.formTarget = frame.name;
    }

    function refresh() {
      timer = null;
      freshFrame();
      if (typeof form.requestSubmit === "function") {
        form.requestSubmit(button);
      } else {
        button.click();
      }
      if (pending) { pending.abort(); }
      pending = new AbortController();
      fetch(form.dataset.previewText, {
        method: "POST",
        body: new URLSearchParams(new FormData(form)),
        credentials: "same-origin",
        signal: pending.signal
      }).then(function (response) {
        return response.json().then(function (data) {
          if (!response.ok) { throw new Error(data.error || response.statusText); }
          textBox.textContent = data.text;
          say("");
        });
      }).catch(function (error) {
        if (error.name !== "AbortError") { say(error.message); }
      });
    }

    form.addEventListener("input", function () {
      if (timer) { clearTimeout(timer); }
      timer = setTimeout(refresh, 600);
    });
    // Show the current draft's text at once (a new campaign has none yet).
    if (!textBox.textContent) { refresh(); }
  }

  /* Live progress: poll the JSON numbers and update the bar, the counts and the
     buttons that apply to the new status, until the campaign is finished. */
  function liveProgress(box) {
    var url = box.dataset.progressUrl;
    var bar = document.getElementById("progress-bar");
    var finished = { done: true, cancelled: true };

    function eta(seconds) {
      if (seconds === null || seconds === undefined) { return "–"; }
      var s = Math.round(seconds);
      if (s < 60) { return s + " s"; }
      var m = Math.floor(s / 60);
      if (m < 60) { return m + " min " + (s % 60) + " s"; }
      return Math.floor(m / 60) + " h " + (m % 60) + " min";
    }

    function show(data) {
      var values = {
        done: data.done, total: data.total, sent: data.sent, failed: data.failed,
        skipped: data.skipped, remaining: data.remaining, cancelled: data.cancelled,
        rate: data.rate, eta: eta(data.eta_seconds), status: data.status,
        taken_over: data.taken_over, possibly_duplicated: data.possibly_duplicated,
        percent: data.total ? Math.round(1000 * data.done / data.total) / 10 : 100
      };
      document.querySelectorAll("[data-field]").forEach(function (el) {
        var key = el.dataset.field;
        if (key in values) { el.textContent = String(values[key]); }
      });
      bar.max = data.total || 1;
      bar.value = data.total ? data.done : 0;
      bar.textContent = data.done + " / " + data.total;
      document.querySelectorAll("[data-statuses]").forEach(function (el) {
        el.hidden = el.dataset.statuses.split(" ").indexOf(data.status) < 0;
      });
    }

    function poll() {
      fetch(url, { credentials: "same-origin", cache: "no-store",
                   headers: { Accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) { throw new Error(response.statusText); }
          return response.json();
        })
        .then(function (data) {
          show(data);
          if (!finished[data.status]) { setTimeout(poll, 2000); }
        })
        .catch(function () { /* logged out or offline: the page still works on reload */ });
    }

    poll();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.querySelector("form[data-preview-text]");
    if (form) { livePreview(form); }
    var box = document.querySelector("[data-progress-url]");
    if (box) { liveProgress(box); }
  });
}());
