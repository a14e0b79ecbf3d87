/* Helpers shared by the pages: JSON from the API, polling while a job is active, charts, formatting. */
(function () {
  "use strict";

  function cookie(name) {
    const found = document.cookie.split("; ").find((row) => row.startsWith(name + "="));
    return found ? decodeURIComponent(found.split("=")[1]) : "";
  }

  /* Always from the server: the pages read live state, and a page the browser goes back to has its requests
     answered from the HTTP cache where possible (a job's page came back showing what it showed when left). */
  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin",
      cache: "no-store" });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const message = (body.error && body.error.message) || response.statusText || "request failed";
      throw new Error(message);
    }
    return body;
  }

  /* POST with the session's CSRF token; a refusal throws an Error with the API's message, its HTTP
     status and its body (a page can show which item of a batch was refused). */
  async function post(url, body, headers) {
    const response = await fetch(url, {
      method: "POST", body, credentials: "same-origin",
      headers: Object.assign({ Accept: "application/json", "X-CSRFToken": cookie("csrftoken") }, headers),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const message = (data.error && data.error.message) || data.detail || `${response.status} ${response.statusText}`;
      throw Object.assign(new Error(message), { status: response.status, body: data });
    }
    return data;
  }

  const postForm = (url, formData) => post(url, formData);
  const postJSON = (url, value) => post(url, JSON.stringify(value), { "Content-Type": "application/json" });

  /* Call fetchOnce every `seconds` until it returns false (the job finished); back off on errors. */
  function poll(fetchOnce, seconds) {
    let delay = seconds * 1000;
    let stopped = false;
    async function tick() {
      if (stopped) return;
      let again = true;
      try {
        again = await fetchOnce();
        delay = seconds * 1000;
      } catch (err) {
        console.warn("poll failed:", err);
        delay = Math.min(delay * 2, 30000);
      }
      if (again !== false && !stopped) setTimeout(tick, document.hidden ? Math.max(delay, 5000) : delay);
    }
    tick();
    return () => { stopped = true; };
  }

  function pct(value, digits) {
    if (value === null || value === undefined || value === "") return "—";
    return (Number(value) * 100).toFixed(digits === undefined ? 1 : digits) + "%";
  }

  /* An ISO timestamp from the API as the pages print it (UTC, to the second). */
  function time(iso) {
    return String(iso).replace("T", " ").replace(/\.\d+/, "").replace(/(Z|[+-]00:00)$/, "");
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key === "style") node.setAttribute("style", value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /* Set every [data-field=name] inside root to data[name]; mark values that changed. */
  function fill(root, data) {
    root.querySelectorAll("[data-field]").forEach((node) => {
      const name = node.dataset.field;
      if (!(name in data)) return;
      let value = data[name];
      if (node.dataset.format === "pct") value = pct(value);
      else if (node.dataset.format === "time" && value) value = time(value);
      else if (value === null || value === "") value = "—";
      const text = String(value);
      if (node.textContent !== text) {
        node.textContent = text;
        node.classList.add("changed");
        setTimeout(() => node.classList.remove("changed"), 800);
      }
    });
    root.querySelectorAll("[data-status]").forEach((node) => {
      if (data.status && node.textContent !== data.status) {
        node.textContent = data.status;
        node.className = "status status-" + data.status;
      }
    });
    root.querySelectorAll("[data-progress]").forEach((node) => {
      const value = data[node.dataset.progress];
      if (typeof value === "number") node.style.width = Math.round(Math.min(Math.max(value, 0), 1) * 1000) / 10 + "%";
    });
  }

  const phone = () => window.matchMedia("(max-width: 640px)").matches;

  /* Draw (or redraw) a Plotly chart; says so in the page when the library did not load. */
  function chart(node, traces, layout, config) {
    if (typeof node === "string") node = document.getElementById(node);
    if (!node) return;
    if (!window.Plotly) {
      node.classList.add("chart-missing");
      node.textContent = "The chart library did not load.";
      return;
    }
    const base = {
      margin: { l: phone() ? 40 : 56, r: 12, t: 36, b: 48 },
      font: { family: "system-ui, sans-serif", size: phone() ? 11 : 12 },
      legend: { orientation: "h", y: -0.2 },
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)",
    };
    window.Plotly.react(node, traces, Object.assign(base, layout || {}),
      Object.assign({ responsive: true, displaylogo: false, displayModeBar: phone() ? false : "hover" }, config || {}));
    node.dataset.drawn = "true";
  }

  window.Kyara = { cookie, getJSON, postForm, postJSON, poll, pct, time, el, fill, chart, phone };
})();
