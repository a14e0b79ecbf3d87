/* Predict page: drop or pick images, POST them to /api/v1/predict_batch, show top-k bars per image with
   the unknown flag, the model version used and a few training pictures of the predicted character. */
(function () {
  "use strict";
  const { el, pct, postForm, getJSON } = window.Kyara;
  const form = document.getElementById("predict-form");
  const input = document.getElementById("predict-files");
  const zone = document.getElementById("dropzone");
  const results = document.getElementById("results");
  const status = document.getElementById("predict-status");
  const submit = document.getElementById("predict-submit");
  const batchMax = Number(form.dataset.batchMax) || 10;
  const maxBytes = Number(form.dataset.maxBytes) || 10 * 1024 * 1024;
  let files = [];

  function say(text, isError) {
    status.textContent = text;
    status.className = isError ? "error-box" : "muted";
  }

  function chosen(list) {
    files = Array.from(list).filter((f) => f.type.startsWith("image/") || /\.(jpe?g|png|gif|webp|bmp|avif)$/i.test(f.name));
    if (!files.length) { say("Those files are not images.", true); return; }
    run();
  }

  input.addEventListener("change", () => chosen(input.files));
  ["dragenter", "dragover"].forEach((type) => zone.addEventListener(type, (event) => {
    event.preventDefault(); zone.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((type) => zone.addEventListener(type, (event) => {
    event.preventDefault(); zone.classList.remove("over");
  }));
  zone.addEventListener("drop", (event) => chosen(event.dataTransfer.files));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (!files.length) { input.click(); return; }
    run();
  });

  function card(file, answer, model) {
    const preview = el("img", { class: "preview", alt: file.name, src: URL.createObjectURL(file) });
    const body = el("div", { class: "body" });
    const top = answer.predictions[0] || {};
    const title = answer.unknown ? "Unknown character" : (top.name || answer.label);
    body.append(el("p", { class: "label", "data-label": answer.label, "data-source": answer.source || "" }, title,
      answer.unknown ? el("span", { class: "badge unknown-flag", style: "margin-left:.4rem" }, "unknown") : null,
      answer.source === "gallery" ? el("span", { class: "badge gallery-flag", style: "margin-left:.4rem",
        title: "No class of the model: answered from this character's approved images (the gallery)" }, "gallery") : null));
    if (answer.unknown) {
      const why = answer.stranger >= 0.5 || (answer.threshold != null && top.probability >= answer.threshold)
        ? `It looks like none of the characters the model knows (stranger ${pct(answer.stranger)})`
        : `Top-1 ${pct(top.probability)} is below the model's threshold ${pct(answer.threshold)}`;
      body.append(el("p", { class: "meta" }, `${why}; closest: ${top.name || top.slug}.`));
    } else if (top.series) {
      body.append(el("p", { class: "meta" }, typeof top.series === "string" ? top.series : (top.series.name || "")));
    }
    answer.predictions.forEach((p, index) => {
      body.append(el("div", { class: "prob-row" + (index === 0 ? " top" : ""), title: `${p.slug} (${p.source})`,
        "data-source": p.source },
        el("span", { class: "name" }, p.name || p.slug, p.source === "gallery" ? " ◇" : ""),
        el("span", { class: "bar" }, el("span", { style: `width:${(p.probability * 100).toFixed(1)}%` })),
        el("span", { class: "p" }, pct(p.probability))));
    });
    body.append(el("p", { class: "meta" },
      `${file.name} · model ${model.version}${model.alias ? " (" + model.alias + ")" : ""}` +
      `${model.backend ? " · " + model.backend : ""} · ${Number(answer.time_ms).toFixed(1)} ms${answer.cached ? " · cached" : ""}`));
    const examples = el("div", { class: "examples", "data-character": top.slug || "" });
    return el("article", { class: "card result", "data-file": file.name }, preview, body, examples);
  }

  async function showExamples(cards) {
    const slugs = [...new Set(cards.map((c) => c.querySelector(".examples").dataset.character).filter(Boolean))];
    if (!slugs.length) return;
    let found;
    try {
      found = (await getJSON(`${form.dataset.examples}?characters=${encodeURIComponent(slugs.join(","))}`)).characters;
    } catch (err) { return; }
    cards.forEach((c) => {
      const box = c.querySelector(".examples");
      const info = found[box.dataset.character];
      if (!info || !info.images.length) return;
      box.append(el("small", { class: "muted" }, `Training pictures of ${info.name}:`));
      info.images.forEach((img) => box.append(
        el("a", { href: img.url, target: "_blank", rel: "noopener" },
          el("img", { src: img.thumbnail, alt: info.name, loading: "lazy" }))));
    });
  }

  async function run() {
    const model = document.getElementById("predict-model").value;
    const topK = document.getElementById("predict-topk").value;
    const tooBig = files.filter((f) => f.size > maxBytes);
    if (tooBig.length) { say(`${tooBig[0].name} is larger than ${(maxBytes / 1048576).toFixed(0)} MB.`, true); return; }
    results.replaceChildren();
    submit.disabled = true;
    say(`Predicting ${files.length} image${files.length > 1 ? "s" : ""}…`);
    const cards = [];
    try {
      for (let start = 0; start < files.length; start += batchMax) {
        const chunk = files.slice(start, start + batchMax);
        const data = new FormData();
        chunk.forEach((f) => data.append("files", f, f.name));
        if (model) data.append("model", model);
        if (topK) data.append("top_k", topK);
        const answer = await postForm(form.dataset.endpoint, data);
        answer.results.forEach((result, index) => {
          const node = card(chunk[index], result, answer.model);
          cards.push(node);
          results.append(node);
        });
      }
      say(`${files.length} image${files.length > 1 ? "s" : ""} predicted.`);
      showExamples(cards);
    } catch (err) {
      say(`Prediction failed: ${err.message}`, true);
    } finally {
      submit.disabled = false;
    }
  }
})();
