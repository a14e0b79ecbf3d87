/* The freeze form's preview: what a freeze with these parameters would make (its leak report, the images
   added and removed per character), fetched from the server as the parameters change. Nothing is written. */
(function () {
  "use strict";
  const form = document.getElementById("freeze-form");
  const target = document.getElementById("freeze-preview");
  if (!form || !target) return;
  const names = ["val", "test", "seed", "min_images"];
  let timer = null;
  let asked = 0;

  async function preview() {
    const query = new URLSearchParams();
    for (const name of names) {
      const input = form.elements[name];
      if (input) query.set(name, input.value);
    }
    const mine = ++asked;
    target.dataset.state = "loading";
    try {
      const response = await fetch(`${form.dataset.preview}?${query}`, { credentials: "same-origin" });
      const html = await response.text();
      if (mine !== asked) return;  // a newer preview is on its way
      target.innerHTML = html;
    } catch (err) {
      if (mine !== asked) return;
      target.textContent = `The preview failed: ${err.message}`;
    }
    target.dataset.state = "ready";
  }

  form.addEventListener("input", (event) => {
    if (!names.includes(event.target.name)) return;
    clearTimeout(timer);
    timer = setTimeout(preview, 400);
  });
  preview();
})();
