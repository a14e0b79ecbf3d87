/* Training job page: loss and accuracy curves per epoch, redrawn while the job runs. */
(function () {
  "use strict";
  const { getJSON, poll, fill, chart, pct, el } = window.Kyara;
  const root = document.getElementById("training-job");
  if (!root) return;
  const ACTIVE = ["queued", "running"];
  let lastEpochs = -1;

  function line(name, x, y, color, dash) {
    return { type: "scatter", mode: "lines+markers", name, x, y, line: { color, dash: dash || "solid", width: 2 },
             marker: { size: 5 } };
  }

  function draw(job) {
    const epochs = job.epochs || [];
    if (epochs.length === lastEpochs) return;
    lastEpochs = epochs.length;
    const x = epochs.map((e) => e.epoch);
    const best = job.best_epoch;
    const marker = best ? [{ type: "line", x0: best, x1: best, yref: "paper", y0: 0, y1: 1,
                             line: { color: "#94a3b8", dash: "dot", width: 1 } }] : [];
    const axis = { xaxis: { title: "epoch", dtick: epochs.length <= 12 ? 1 : undefined }, shapes: marker };
    chart("loss-chart", [
      line("train loss", x, epochs.map((e) => e.train_loss), "#6366f1"),
      line("val loss", x, epochs.map((e) => e.val_loss), "#f97316"),
    ], Object.assign({ yaxis: { title: "loss", rangemode: "tozero" } }, axis));
    chart("accuracy-chart", [
      line("train accuracy", x, epochs.map((e) => e.train_accuracy), "#6366f1"),
      line("val accuracy", x, epochs.map((e) => e.val_accuracy), "#f97316"),
    ], Object.assign({ yaxis: { title: "accuracy", tickformat: ".0%", range: [0, 1.02] } }, axis));
    if (root.dataset.active === "1") {
      const body = document.querySelector("#epoch-table tbody");
      body.replaceChildren(...epochs.map((e) => el("tr", {},
        el("td", { class: "num" }, e.epoch), el("td", { class: "num" }, e.train_loss.toFixed(4)),
        el("td", { class: "num" }, pct(e.train_accuracy)), el("td", { class: "num" }, e.val_loss.toFixed(4)),
        el("td", { class: "num" }, pct(e.val_accuracy)), el("td", { class: "num" }, e.lr.toExponential(2)),
        el("td", { class: "num" }, e.seconds.toFixed(1)), el("td", { class: "num" }, Math.round(e.images_per_second)))));
    }
  }

  poll(async () => {
    const job = await getJSON(root.dataset.api);
    if (root.dataset.active === "1") fill(root, job);
    draw(job);
    if (root.dataset.active !== "1") return false;
    if (ACTIVE.includes(job.status)) return true;
    setTimeout(() => window.location.reload(), 1200);
    return false;
  }, 2);
})();
