/* Crawl pages: counters move while a job runs (the API is polled each second until the job ends). */
(function () {
  "use strict";
  const { getJSON, poll, fill, el } = window.Kyara;
  const ACTIVE = ["queued", "running"];

  function fillMap(node, map) {
    const entries = Object.entries(map || {});
    node.replaceChildren(...(entries.length
      ? entries.flatMap(([key, value]) => [el("dt", {}, key), el("dd", {}, value)])
      : [el("dd", { class: "muted" }, "none")]));
  }

  const detail = document.getElementById("crawl-job");
  if (detail && detail.dataset.active === "1") {
    poll(async () => {
      const job = await getJSON(detail.dataset.api);
      fill(detail, job);
      fillMap(document.getElementById("refused-by-reason"), job.refused_by_reason);
      fillMap(document.getElementById("errors-by-kind"), job.errors_by_kind);
      const error = document.getElementById("last-error");
      error.textContent = job.error || "";
      error.hidden = !job.error;
      if (ACTIVE.includes(job.status)) return true;
      // Finished: render the page again for its final actions (retry) and timestamps.
      setTimeout(() => window.location.reload(), 1200);
      return false;
    }, 1);
  }

  const table = document.getElementById("crawl-table");
  if (table && table.querySelector("tr[data-active='1']")) {
    poll(async () => {
      const page = await getJSON(table.dataset.api);
      let active = false;
      for (const job of page.results || []) {
        const row = table.querySelector(`tr[data-job='${job.id}']`);
        if (!row) continue;
        fill(row, job);
        row.dataset.active = ACTIVE.includes(job.status) ? "1" : "0";
      }
      active = !!table.querySelector("tr[data-active='1']");
      return active;
    }, 2);
  }
})();
