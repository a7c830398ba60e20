// Import progress (templates/admin/import_job.html): poll the job's JSON and
// update the bar; reload the page when the job has finished, to show the result.
// Without JavaScript the page has a plain reload link instead.
(function () {
  "use strict";
  var section = document.getElementById("import-progress");
  if (!section) { return; }
  var url = section.getAttribute("data-url");
  var bar = document.getElementById("import-bar");
  var status = document.getElementById("import-status");

  // The sentences come translated from the page (data-* attributes).
  function describe(p) {
    if (p.status === "queued") { return section.getAttribute("data-waiting"); }
    if (p.processed_rows < p.total_rows) {
      return section.getAttribute("data-checking")
        .replace("{done}", p.processed_rows).replace("{total}", p.total_rows);
    }
    return section.getAttribute("data-writing");
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (p) {
        if (p.finished) { window.location.reload(); return; }
        bar.value = p.percent;
        bar.textContent = p.percent + " %";
        status.textContent = describe(p);
        window.setTimeout(poll, 1000);
      })
      .catch(function () { window.setTimeout(poll, 5000); });
  }
  window.setTimeout(poll, 1000);
}());
