/* Evaluation pages: per-character accuracy by tier, confusion heatmap, calibration, history, comparison. */
(function () {
  "use strict";
  const { chart, getJSON, poll, phone } = window.Kyara;

  const root = document.getElementById("evaluation-run");
  if (root && root.dataset.active === "1") {
    poll(async () => {
      const run = await getJSON(root.dataset.api);
      if (run.status === "queued" || run.status === "running") return true;
      window.location.reload();
      return false;
    }, 2);
  }

  const dataNode = document.getElementById("evaluation-data");
  if (dataNode) {
    const data = JSON.parse(dataNode.textContent);
    drawAccuracy(data.accuracy);
    drawConfusion(data.confusion);
    drawCalibration(data.reliability, data.reliability_uncalibrated || []);
    setUpHistory(data.history, data.accuracy);
  }

  const compareNode = document.getElementById("compare-data");
  if (compareNode) drawDelta(JSON.parse(compareNode.textContent));

  function sized(id, rows, perRow, floor) {
    const node = document.getElementById(id);
    node.style.height = Math.max(floor, rows * perRow + 90) + "px";
    return node;
  }

  function drawAccuracy(acc) {
    const node = sized("accuracy-chart", acc.labels.length, 22, 260);
    chart(node, [{
      // A 0% bar still shows its tier's colour as a sliver; the text and hover give the true value.
      type: "bar", orientation: "h", y: acc.labels, x: acc.accuracy.map((v) => Math.max(v, 0.006)),
      marker: { color: acc.colors },
      customdata: acc.labels.map((_, i) => [acc.tiers[i], acc.support[i]]),
      hovertemplate: "%{y}: %{text}<br>%{customdata[0]} · %{customdata[1]} images<extra></extra>",
      text: acc.accuracy.map((v) => (v * 100).toFixed(0) + "%"), textposition: "outside", cliponaxis: false,
    }], {
      xaxis: { range: [0, 1.12], tickformat: ".0%", title: "accuracy" },
      yaxis: { autorange: "reversed", automargin: true, type: "category" },
      margin: { l: 10, r: 16, t: 10, b: 44 }, showlegend: false, bargap: 0.25,
    });
  }

  function drawConfusion(conf) {
    if (!conf.labels.length) return;
    const n = conf.labels.length;
    const node = sized("confusion-chart", n, phone() ? 16 : 26, 320);
    chart(node, [{
      type: "heatmap", x: conf.labels, y: conf.labels, z: conf.normalized, zmin: 0, zmax: 1,
      customdata: conf.counts, colorscale: [[0, "#f8fafc"], [0.25, "#c7d2fe"], [1, "#3730a3"]], showscale: !phone(),
      hovertemplate: "true %{y}<br>predicted %{x}<br>%{customdata} images (%{z:.0%} of the row)<extra></extra>",
      text: n <= 15 ? conf.counts : null, texttemplate: n <= 15 ? "%{text}" : undefined,
      colorbar: { tickformat: ".0%", thickness: 10 },
    }], {
      xaxis: { title: "predicted", tickangle: -45, automargin: true, type: "category" },
      yaxis: { title: "true", autorange: "reversed", automargin: true, type: "category" },
      margin: { l: 10, r: 10, t: 10, b: 10 },
    });
  }

  function drawCalibration(bins, before) {
    const used = bins.filter((b) => b.count > 0);
    const raw = before.filter((b) => b.count > 0);
    const uncalibrated = raw.length ? [{ type: "scatter", mode: "lines+markers", name: "uncalibrated",
      x: raw.map((b) => b.confidence), y: raw.map((b) => b.accuracy), line: { color: "#94a3b8", width: 1.5 },
      marker: { size: 5 }, hovertemplate: "uncalibrated %{x:.0%}: accuracy %{y:.0%}<extra></extra>" }] : [];
    chart("calibration-chart", [...uncalibrated,
      { type: "bar", name: "images", x: bins.map((b) => (b.lower + b.upper) / 2), y: bins.map((b) => b.count),
        yaxis: "y2", marker: { color: "rgba(99,102,241,.18)" }, width: 1 / Math.max(bins.length, 1) * 0.9,
        hovertemplate: "%{y} images<extra></extra>" },
      { type: "scatter", mode: "lines", name: "perfect", x: [0, 1], y: [0, 1],
        line: { color: "#94a3b8", dash: "dash", width: 1 }, hoverinfo: "skip" },
      { type: "scatter", mode: "lines+markers", name: "model", x: used.map((b) => b.confidence),
        y: used.map((b) => b.accuracy), line: { color: "#4f46e5", width: 2 }, marker: { size: 7 },
        hovertemplate: "confidence %{x:.0%}: accuracy %{y:.0%}<extra></extra>" },
    ], {
      xaxis: { range: [0, 1], tickformat: ".0%", title: "top-1 confidence" },
      yaxis: { range: [0, 1.02], tickformat: ".0%", title: "accuracy" },
      // Image counts per bin sit behind the curve; their numbers are in the hover, not on an axis.
      yaxis2: { overlaying: "y", side: "right", showgrid: false, rangemode: "tozero", showticklabels: false },
    });
  }

  function setUpHistory(history, acc) {
    const select = document.getElementById("history-character");
    if (!select || !history.length) return;
    const worst = acc.slugs.find((slug) => history.some((h) => h.character === slug)) || history[0].character;
    history.forEach((h) => {
      const option = new Option(h.name, h.character, false, h.character === worst);
      select.add(option);
    });
    const versions = document.getElementById("history-versions");
    const draw = () => {
      const entry = history.find((h) => h.character === select.value);
      if (!entry) return;
      // Runs as categories, oldest first: runs minutes apart would otherwise crowd a time axis.
      chart("history-chart", [{
        type: "scatter", mode: "lines+markers+text", name: "accuracy",
        x: entry.runs.map((r) => `#${r.run} ${r.model_version}`), y: entry.runs.map((r) => r.accuracy),
        text: entry.runs.map((r) => (r.accuracy * 100).toFixed(0) + "%"), textposition: "top center",
        line: { color: "#4f46e5", width: 2 }, marker: { size: 9 },
        customdata: entry.runs.map((r) => [r.dataset_version, r.support]),
        hovertemplate: "%{x} on %{customdata[0]}: %{y:.0%} of %{customdata[1]} images<extra></extra>",
      }], {
        xaxis: { type: "category", automargin: true },
        yaxis: { range: [-0.02, 1.1], tickformat: ".0%", title: "accuracy" }, showlegend: false,
        margin: { t: 16 },
      });
      versions.replaceChildren(...entry.dataset_versions.map((v) => Kyara.el("li", {},
        `${v.dataset_version}: ${v.train} train, ${v.val} val, ${v.test} test (${v.total} images)`)));
    };
    select.addEventListener("change", draw);
    draw();
  }

  function drawDelta(data) {
    if (!data.labels.length) return;
    const node = sized("delta-chart", data.labels.length, 22, 240);
    chart(node, [{
      type: "bar", orientation: "h", y: data.labels, x: data.delta,
      marker: { color: data.delta.map((d) => (d > 0 ? "#16a34a" : d < 0 ? "#dc2626" : "#94a3b8")) },
      hovertemplate: "%{y}: %{x:+.1%}<extra></extra>",
    }], {
      xaxis: { tickformat: "+.0%", title: "accuracy change", zeroline: true },
      yaxis: { autorange: "reversed", automargin: true, type: "category" },
      margin: { l: 10, r: 16, t: 10, b: 44 }, showlegend: false,
    });
  }
})();
