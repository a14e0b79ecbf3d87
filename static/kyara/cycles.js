/* A cycle's page: while it is under way the API is polled; stage statuses, details and the waiting count move in
   place, and the page is drawn again when the cycle reaches another stage or ends (new links and actions). */
(function () {
  "use strict";
  const { getJSON, poll, fill } = window.Kyara;
  const ACTIVE = ["queued", "running"];
  const root = document.getElementById("cycle");
  if (!root || root.dataset.active !== "1") return;

  poll(async () => {
    const cycle = await getJSON(root.dataset.api);
    fill(root, cycle);
    for (const stage of cycle.stages) {
      const row = root.querySelector(`tr[data-stage='${stage.name}']`);
      if (!row) continue;
      const status = row.querySelector("[data-stage-status]");
      status.textContent = stage.status;
      status.className = "status status-" + stage.status;
      row.querySelector("[data-stage-detail]").textContent = stage.detail || "—";
    }
    if (ACTIVE.includes(cycle.status) && cycle.stage === root.dataset.stage) return true;
    setTimeout(() => window.location.reload(), 800);
    return false;
  }, 3);
})();
