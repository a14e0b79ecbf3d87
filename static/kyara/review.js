/* The review page: pending images as cards, decided with the keyboard (or each card's buttons).

   A decision takes its card out of the grid at once and waits a moment in `pending`; small batches go to
   POST /api/v1/review/decide (all or nothing). A refused batch names its bad items: those cards come back
   with the server's message and the rest are sent again. `u` undoes the last decision: one not sent yet is
   taken back here; a sent one is undone by the server, which reverts its whole batch, so the batch's other
   decisions are sent again and only the last card comes back. */
(function () {
  "use strict";
  const { getJSON, postJSON, el, pct } = window.Kyara;
  const root = document.getElementById("review");
  if (!root) return;

  const BATCH_SIZE = 5; // decisions per request
  const BATCH_DELAY = 800; // ms without a new decision before a smaller batch is sent
  const LOW_WATER = 12; // fewer cards left than this: read more of the queue
  const PAGES_READ = 20; // at most this many pages looked through for unseen images at once
  const SEARCH_DELAY = 150; // ms of typing pause before the type-ahead asks the server
  const SEARCH_LIMIT = 20;

  const urls = root.dataset; // list, decide, undo, approveAgreeing, characters
  const filters = JSON.parse(document.getElementById("review-filters-data").textContent);
  const grid = document.getElementById("review-grid");
  const statusLine = document.getElementById("review-status");
  const sync = document.getElementById("review-sync");
  const countNode = document.getElementById("review-count");
  const navCount = document.getElementById("nav-review-count");
  const empty = document.getElementById("review-empty");

  const items = new Map(); // image id → the item as the API listed it
  const cards = new Map(); // image id → its card (in the grid or not)
  const order = []; // ids in queue order: where a card goes back
  const decided = new Set(); // ids out of the grid (pending, sending or saved): not shown again by a reload
  let pending = []; // decisions waiting to be sent, oldest first
  let sending = null; // the batch request in flight (a promise that never rejects)
  const saved = []; // batches the server applied, newest last: {batch, decisions} or {batch, bulk: true}
  let total = NaN; // images waiting (the server's count, less what this page decided since); NaN until known
  let current = null; // id of the card with the focus
  let timer = null;
  let loading = null;
  let undoing = Promise.resolve(); // undos run one after another: each needs the previous one's answer

  // --- Messages ------------------------------------------------------------------------------------

  function say(text, isError) {
    statusLine.textContent = text;
    statusLine.classList.toggle("error", !!isError);
    statusLine.setAttribute("role", isError ? "alert" : "status");
  }

  function unsaved() {
    return pending.length + (sending ? sending.size : 0);
  }

  function showSync() {
    sync.textContent = unsaved() ? `saving ${unsaved()}…` : (saved.length ? "all decisions saved" : "");
  }

  /* The nav counts every pending image; it moves by what this page decided or took back. */
  function nudgeNav(delta) {
    const now = navCount ? Number(navCount.textContent) : NaN;
    if (Number.isFinite(now) && Number.isFinite(delta)) navCount.textContent = Math.max(0, now + delta);
  }

  function setTotal(value) {
    const before = total;
    total = Math.max(0, value);
    countNode.textContent = total;
    nudgeNav(total - before);
  }

  // --- Cards -----------------------------------------------------------------------------------------

  function verdict(item) {
    const top = item.suggestions[0];
    if (item.flagged) return ["flagged", `flagged: looks like ${top.name} (${pct(top.probability, 0)})`];
    if (item.agrees === true) return ["agrees", `model agrees · ${pct(item.claimed_probability, 0)}`];
    if (item.agrees === false) return ["disagrees", `model disagrees · label ${pct(item.claimed_probability, 0)}`];
    if (!top) return ["unjudged", "no suggestion yet"];
    if (!item.character) return ["unlabelled", "unlabelled"];
    return ["unjudged", "the model does not know this character"];
  }

  function suggestionList(item) {
    if (!item.suggestions.length) return el("p", { class: "muted review-none" }, "No suggestions yet.");
    const claimed = item.character && item.character.slug;
    return el("ol", { class: "review-suggestions", "aria-label": "The model's suggestions" },
      item.suggestions.map((s, i) => el("li", {},
        el("button", {
          type: "button", class: "suggestion" + (s.slug === claimed ? " is-claimed" : ""), "data-pick": i + 1,
          "aria-keyshortcuts": String(i + 1), "aria-label": `Label as ${s.name}, ${pct(s.probability, 0)} (key ${i + 1})`,
        },
        el("kbd", {}, i + 1), el("span", { class: "name", title: s.slug }, s.name),
        el("span", { class: "bar", "aria-hidden": "true" },
          el("span", { style: `width:${Math.round(Math.min(Math.max(s.probability, 0), 1) * 100)}%` })),
        el("span", { class: "p" }, pct(s.probability, 0))))));
  }

  function duplicates(item) {
    if (!item.near_duplicates.length) return null;
    return el("div", { class: "review-dups" },
      el("small", { class: "muted" }, "Already in the dataset:"),
      item.near_duplicates.map((d) => el("a", {
        href: d.url, target: "_blank", rel: "noopener", tabindex: "-1",
        title: `#${d.id} ${d.character ? d.character.name : "unlabelled"} (distance ${d.distance})`,
      }, el("img", { src: d.thumbnail_url, alt: `Near-duplicate #${d.id}, ${d.character ? d.character.name : "unlabelled"}`,
        loading: "lazy" }))));
  }

  function card(item) {
    const [kind, text] = verdict(item);
    const label = item.character ? item.character.name : "unlabelled";
    const source = [item.source.site || item.source.kind, item.source.post_id && `post ${item.source.post_id}`]
      .filter(Boolean).join(" · ");
    return el("article", {
      class: `review-card ${kind}`, tabindex: "-1", "data-image": item.id,
      "aria-label": `Image ${item.id}, ${item.character ? "labelled " + label : "unlabelled"}; ${text}`,
    },
    el("a", { class: "review-picture", href: item.url, target: "_blank", rel: "noopener", tabindex: "-1" },
      el("img", { src: item.thumbnail_url, alt: `Image ${item.id}`, loading: "lazy" })),
    el("div", { class: "review-body" },
      el("p", { class: "review-claim" }, el("strong", { class: item.character ? "" : "muted" }, label),
        " ", el("span", { class: `verdict verdict-${kind}` }, text)),
      suggestionList(item),
      duplicates(item),
      el("p", { class: "review-meta muted" }, `#${item.id}`, source && ` · ${source}`),
      el("div", { class: "review-actions" },
        el("button", { type: "button", "data-act": "approve", disabled: !item.character, "aria-keyshortcuts": "a" },
          el("kbd", {}, "a"), " Approve"),
        el("button", { type: "button", class: "danger", "data-act": "reject", "aria-keyshortcuts": "r" },
          el("kbd", {}, "r"), " Reject"),
        el("button", { type: "button", class: "secondary", "data-act": "label", "aria-keyshortcuts": "/" },
          el("kbd", {}, "/"), " Label…")),
      el("p", { class: "review-error", role: "alert", hidden: true })));
  }

  function add(item) {
    if (!cards.has(item.id)) order.push(item.id);
    items.set(item.id, item);
    const node = card(item);
    cards.set(item.id, node);
    grid.append(node);
  }

  function visible() {
    return Array.from(grid.children);
  }

  function refresh() {
    empty.hidden = grid.children.length > 0 || !!loading;
    if (current === null || !grid.contains(cards.get(current))) {
      const first = grid.firstElementChild;
      if (first) mark(Number(first.dataset.image));
    }
    preview();
  }

  /* The current card: the one the keys act on (the only one reached by Tab: a roving tabindex). */
  function mark(id) {
    const previous = cards.get(current);
    if (previous) { previous.classList.remove("current"); previous.tabIndex = -1; }
    current = id;
    const node = cards.get(id);
    if (node) { node.classList.add("current"); node.tabIndex = 0; }
  }

  function focusCard(id) {
    const node = cards.get(id);
    if (!node || !grid.contains(node)) return;
    mark(id);
    node.focus({ preventScroll: true });
    node.scrollIntoView({ block: "nearest" });
  }

  function take(id) {
    const node = cards.get(id);
    const next = node.nextElementSibling || node.previousElementSibling;
    const hadFocus = node.contains(document.activeElement) || current === id;
    node.remove();
    decided.add(id);
    if (next && hadFocus) focusCard(Number(next.dataset.image));
    refresh();
    if (grid.children.length < LOW_WATER) loadMore();
  }

  function restore(id, message) {
    const node = cards.get(id);
    decided.delete(id);
    if (!grid.contains(node)) {
      const after = order.slice(order.indexOf(id) + 1).map((other) => cards.get(other)).find((n) => grid.contains(n));
      grid.insertBefore(node, after || null);
    }
    const error = node.querySelector(".review-error");
    error.textContent = message || "";
    error.hidden = !message;
    node.classList.toggle("has-error", !!message);
    refresh();
  }

  function columns() {
    const nodes = visible();
    if (!nodes.length) return 1;
    const top = nodes[0].offsetTop;
    const n = nodes.findIndex((node) => node.offsetTop !== top);
    return n === -1 ? nodes.length : n;
  }

  function move(step) {
    const nodes = visible();
    if (!nodes.length) return;
    const at = nodes.indexOf(cards.get(current));
    const to = Math.min(Math.max((at === -1 ? 0 : at) + step, 0), nodes.length - 1);
    focusCard(Number(nodes[to].dataset.image));
    if (to >= nodes.length - 2) loadMore();
  }

  // --- Decisions -------------------------------------------------------------------------------------

  function describe(d) {
    const item = items.get(d.image);
    if (d.action === "approve") return `Approved #${d.image} as ${item.character.name}.`;
    if (d.action === "reject") return `Rejected #${d.image} (${d.reason.replace(/_/g, " ")}).`;
    return `#${d.image} labelled ${d.name} and approved.`;
  }

  function decide(action, extra) {
    const item = items.get(current);
    if (!item || !grid.contains(cards.get(current))) return;
    const decision = Object.assign({ image: item.id, action }, extra);
    if (action === "relabel" && item.character && item.character.slug === decision.character) {
      decision.action = "approve"; // the label it has: an approval says so more plainly
      delete decision.character;
    }
    if (decision.action === "approve" && !item.character) {
      say(`Image #${item.id} has no label: take a suggestion (1–3), label it by name (/), or reject it (r).`, true);
      return;
    }
    const name = decision.name;
    delete decision.name;
    say(describe(Object.assign({ name }, decision)));
    pending.push(decision);
    take(item.id);
    schedule();
  }

  function schedule() {
    clearTimeout(timer);
    timer = pending.length >= BATCH_SIZE ? null : setTimeout(flush, BATCH_DELAY);
    if (!timer) flush();
    showSync();
  }

  function flush() {
    clearTimeout(timer);
    timer = null;
    if (sending || !pending.length) return sending || Promise.resolve();
    const batch = pending.splice(0, BATCH_SIZE);
    sending = send(batch).finally(() => {
      sending = null;
      if (pending.length) schedule();
      showSync();
    });
    sending.size = batch.length;
    showSync();
    return sending;
  }

  /* Everything decided so far is sent (or refused) before the queue is read again or undone. */
  async function drain() {
    while (pending.length || sending) await (sending || flush());
  }

  async function send(batch) {
    try {
      const result = await postJSON(urls.decide, { decisions: batch });
      saved.push({ batch: result.batch, decisions: batch });
      setTotal(total - batch.length);
    } catch (error) {
      const problems = (((error.body || {}).error || {}).details || {}).problems;
      if (error.status === 400 && Array.isArray(problems) && problems.length) {
        const refused = new Map();
        for (const p of problems) {
          const text = (p.field ? `${p.field}: ` : "") + p.message;
          refused.set(p.index, refused.has(p.index) ? `${refused.get(p.index)}; ${text}` : text);
        }
        const again = batch.filter((d, i) => !refused.has(i));
        batch.forEach((d, i) => { if (refused.has(i)) restore(d.image, `Refused: ${refused.get(i)}`); });
        pending.unshift(...again); // nothing of the batch was applied: the others go again
        say(`The server refused ${refused.size} decision(s); the card(s) are back with the reason.`, true);
      } else {
        batch.forEach((d) => restore(d.image, `Not saved: ${error.message}`));
        say(`Not saved: ${error.message}`, true);
      }
    }
  }

  async function undo() {
    if (pending.length) {
      const d = pending.pop();
      restore(d.image);
      focusCard(d.image);
      say(`Undone: #${d.image} is back (it had not been sent yet).`);
      showSync();
      return;
    }
    await drain();
    let result;
    try {
      result = await postJSON(urls.undo, {});
    } catch (error) {
      say(error.message, true);
      return;
    }
    const last = saved.length && saved[saved.length - 1].batch === result.batch ? saved.pop() : null;
    if (last && last.decisions) {
      // The server reverted the whole batch; all but its last decision are made again.
      const back = last.decisions[last.decisions.length - 1];
      setTotal(total + last.decisions.length);
      pending.push(...last.decisions.slice(0, -1));
      say(`Undone: #${back.image} is back as it was.`);
      if (!cards.has(back.image)) { // the grid was read again since (a bulk approval): read it once more
        await reload();
        return;
      }
      restore(back.image);
      focusCard(back.image);
      if (pending.length) schedule();
    } else {
      say(`Undone: ${result.restored} image(s) of ${result.kind.replace(/_/g, " ")} batch ${result.batch} are back.`);
      nudgeNav(result.restored);
      await reload();
    }
    showSync();
  }

  // --- Reading the queue -----------------------------------------------------------------------------

  function listUrl(page) {
    const query = new URLSearchParams(Object.assign({}, filters, { page }));
    return `${urls.list}?${query}`;
  }

  /* Unseen images of the queue appended: page 1 first (decided images have left it), further pages only
     while everything on a page is on the grid already (the reviewer skipped past it). */
  function loadMore() {
    if (loading || grid.children.length + unsaved() >= total) return loading;
    loading = (async () => {
      await drain();
      for (let page = 1; page <= PAGES_READ; page++) {
        const body = await getJSON(listUrl(page));
        setTotal(body.count);
        const fresh = body.results.filter((item) => !decided.has(item.id) && !grid.contains(cards.get(item.id)));
        fresh.forEach(add);
        if (fresh.length || !body.next) break;
      }
    })().catch((error) => say(`Could not read the queue: ${error.message}`, true))
      .finally(() => { loading = null; refresh(); });
    return loading;
  }

  /* After a bulk approval or an undo of one: the grid is read again from the server. */
  async function reload() {
    await drain();
    grid.replaceChildren();
    decided.clear();
    order.length = 0;
    cards.clear();
    items.clear();
    current = null;
    total = Infinity;
    await loadMore();
    if (current !== null) focusCard(current);
  }

  // --- Dialogs ---------------------------------------------------------------------------------------

  function closeTo(dialog) {
    if (dialog.open) dialog.close();
    if (current !== null) focusCard(current);
  }

  const rejectDialog = document.getElementById("reject-dialog");
  function reject(reason) {
    rejectDialog.close();
    decide("reject", { reason });
  }
  rejectDialog.addEventListener("keydown", (event) => {
    const button = rejectDialog.querySelector(`[data-key="${CSS.escape(event.key)}"]`);
    if (button) { event.preventDefault(); reject(button.dataset.reason); }
  });
  rejectDialog.addEventListener("click", (event) => {
    const button = event.target.closest("[data-reason]");
    if (button) reject(button.dataset.reason);
    else if (event.target === rejectDialog) closeTo(rejectDialog); // a click on the backdrop
  });
  rejectDialog.addEventListener("cancel", (event) => { event.preventDefault(); closeTo(rejectDialog); });

  /* A type-ahead over every character, searched on the server (any number of characters): debounced,
     answers to older questions are dropped, Enter waits for the answer to what is typed. */
  function typeahead(input, list, choose) {
    let wait = null;
    let asked = 0;
    let shown = null; // the text whose answer is on the list
    let options = [];
    let active = -1;

    function highlight(index) {
      active = index;
      list.querySelectorAll("[role=option]").forEach((node, i) => node.setAttribute("aria-selected", String(i === index)));
      const node = list.children[index];
      if (node && node.id) { input.setAttribute("aria-activedescendant", node.id); node.scrollIntoView({ block: "nearest" }); }
      else input.removeAttribute("aria-activedescendant");
    }

    function show(found, message) {
      options = found;
      list.replaceChildren(...found.map((c, i) => el("li", {
        role: "option", id: `${list.id}-${i}`, "data-index": i, "aria-selected": "false",
      }, el("span", { class: "name" }, c.name), " ", el("small", { class: "muted" }, `${c.series} · ${c.slug}`))));
      if (message) list.append(el("li", { class: "muted", role: "presentation" }, message));
      list.hidden = !found.length && !message;
      input.setAttribute("aria-expanded", String(!list.hidden));
      highlight(found.length ? 0 : -1);
    }

    async function search() {
      clearTimeout(wait);
      const text = input.value.trim();
      const mine = ++asked;
      if (!text) { shown = text; show([]); return; }
      try {
        const body = await getJSON(`${urls.characters}?${new URLSearchParams({ search: text, limit: SEARCH_LIMIT })}`);
        if (mine !== asked) return;
        shown = text;
        const found = Array.isArray(body) ? body : body.results || [];
        show(found, found.length ? "" : `No character matches “${text}”.`);
      } catch (error) {
        if (mine === asked) show([], `Search failed: ${error.message}`);
      }
    }

    input.addEventListener("input", () => { clearTimeout(wait); wait = setTimeout(search, SEARCH_DELAY); });
    input.addEventListener("keydown", async (event) => {
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        if (options.length) highlight((active + (event.key === "ArrowDown" ? 1 : options.length - 1)) % options.length);
      } else if (event.key === "Enter") {
        if (!input.value.trim()) return;
        event.preventDefault();
        if (shown !== input.value.trim()) await search(); // typed faster than the debounce: ask now
        if (options.length) choose(options[Math.max(active, 0)]);
      } else if (event.key === "Escape" && !list.hidden && !input.closest("dialog")) { // in a dialog: Esc closes it
        event.preventDefault();
        event.stopPropagation();
        show([]);
      }
    });
    list.addEventListener("mousedown", (event) => event.preventDefault()); // keep the input's focus
    list.addEventListener("click", (event) => {
      const node = event.target.closest("[role=option]");
      if (node) choose(options[Number(node.dataset.index)]);
    });
    input.addEventListener("blur", () => setTimeout(() => show([]), 150));
    return { reset() { input.value = ""; shown = null; asked++; show([]); } };
  }

  const labelDialog = document.getElementById("label-dialog");
  const labelSearch = typeahead(document.getElementById("label-search"), document.getElementById("label-options"),
    (character) => {
      labelDialog.close();
      decide("relabel", { character: character.slug, name: character.name });
    });
  labelDialog.addEventListener("cancel", (event) => { event.preventDefault(); closeTo(labelDialog); });
  labelDialog.addEventListener("click", (event) => { if (event.target === labelDialog) closeTo(labelDialog); });

  const filterInput = document.getElementById("filter-character");
  // Empty fields stay out of the address: /ui/review/?character=x, not ?character=x&source=&plan=...
  filterInput.form.addEventListener("formdata", (event) => {
    for (const [name, value] of Array.from(event.formData)) if (value === "") event.formData.delete(name);
  });
  typeahead(filterInput, document.getElementById("filter-character-options"), (character) => {
    filterInput.value = character.slug;
    filterInput.form.requestSubmit();
  });

  const helpDialog = document.getElementById("help-dialog");
  helpDialog.addEventListener("click", (event) => {
    if (event.target === helpDialog || event.target.closest("[data-close]")) closeTo(helpDialog);
  });
  helpDialog.addEventListener("keydown", (event) => { if (event.key === "?") { event.preventDefault(); closeTo(helpDialog); } });
  document.getElementById("review-help-open").addEventListener("click", () => helpDialog.showModal());

  function openLabel() {
    if (!items.has(current)) return;
    labelSearch.reset();
    labelDialog.showModal();
  }

  function openReject() {
    if (!items.has(current)) return;
    rejectDialog.showModal();
    rejectDialog.querySelector("[data-reason]").focus();
  }

  function pick(n) {
    const item = items.get(current);
    const suggestion = item && item.suggestions[n - 1];
    if (!suggestion) { say(`No suggestion ${n} for this image.`, true); return; }
    decide("relabel", { character: suggestion.slug, name: suggestion.name });
  }

  // --- Bulk approval ---------------------------------------------------------------------------------

  const bulkForm = document.getElementById("bulk-form");
  const bulkRange = document.getElementById("bulk-range");
  const bulkP = document.getElementById("bulk-p");
  const bulkPreview = document.getElementById("bulk-preview");
  const bulkDialog = document.getElementById("bulk-dialog");

  function threshold() {
    const p = Number(bulkP.value);
    return bulkP.value !== "" && p >= 0 && p <= 1 ? p : null;
  }

  /* Cards the bulk approval would take at the chosen probability are marked. */
  function preview() {
    if (document.getElementById("bulk-open").disabled) return;
    const p = threshold();
    let n = 0;
    for (const node of visible()) {
      const item = items.get(Number(node.dataset.image));
      const hit = p !== null && item.agrees === true && item.claimed_probability >= p;
      node.classList.toggle("would-approve", hit);
      n += hit;
    }
    bulkPreview.textContent = p === null ? "Give a probability from 0 to 1."
      : `${n} of the ${grid.children.length} images shown would be approved (marked); the server checks the whole queue.`;
  }

  bulkRange.addEventListener("input", () => { bulkP.value = bulkRange.value; preview(); });
  bulkP.addEventListener("input", () => { if (threshold() !== null) bulkRange.value = bulkP.value; preview(); });
  bulkForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const p = threshold();
    if (p === null) { say("Give a probability from 0 to 1.", true); bulkP.focus(); return; }
    const scope = Object.keys(filters).length ? " matching these filters" : "";
    document.getElementById("bulk-question").textContent =
      `Approve every waiting image${scope} whose label the model agrees with at ${pct(p, 0)} or more? ` +
      "It can be undone (u) as one batch.";
    bulkDialog.showModal();
    document.getElementById("bulk-confirm").focus();
  });
  document.getElementById("bulk-cancel").addEventListener("click", () => bulkDialog.close());
  document.getElementById("bulk-confirm").addEventListener("click", async () => {
    bulkDialog.close();
    await drain();
    try {
      const result = await postJSON(urls.approveAgreeing, Object.assign({}, filters, { min_probability: threshold() }));
      if (result.batch) saved.push({ batch: result.batch, bulk: true });
      say(result.message || `Approved ${result.approved} image(s) the model ${result.model} agrees with.`);
      nudgeNav(-result.approved);
      await reload();
    } catch (error) {
      say(`Bulk approval refused: ${error.message}`, true);
    }
  });

  // --- Keys and clicks -------------------------------------------------------------------------------

  const KEYS = {
    ArrowRight: () => move(1), ArrowLeft: () => move(-1), j: () => move(1), k: () => move(-1),
    ArrowDown: () => move(columns()), ArrowUp: () => move(-columns()),
    Home: () => move(-Infinity), End: () => move(Infinity),
    a: () => decide("approve"), r: openReject, "/": openLabel, u: () => { undoing = undoing.then(undo).catch((error) => say(error.message, true)); }, "?": () => helpDialog.showModal(),
    1: () => pick(1), 2: () => pick(2), 3: () => pick(3),
  };

  document.addEventListener("keydown", (event) => {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
    if (document.querySelector("dialog[open]")) return; // a dialog handles its own keys
    if (event.target.closest("input, select, textarea, [contenteditable], summary")) return;
    const action = KEYS[event.key];
    if (!action) return;
    if (event.key.startsWith("Arrow") && !grid.contains(event.target) && event.target !== document.body) return;
    event.preventDefault();
    action();
  });

  grid.addEventListener("focusin", (event) => {
    const node = event.target.closest(".review-card");
    if (node && Number(node.dataset.image) !== current) mark(Number(node.dataset.image));
  });
  grid.addEventListener("click", (event) => {
    const node = event.target.closest(".review-card");
    if (!node) return;
    mark(Number(node.dataset.image));
    const button = event.target.closest("button");
    if (!button) return;
    if (button.dataset.pick) pick(Number(button.dataset.pick));
    else if (button.dataset.act === "approve") decide("approve");
    else if (button.dataset.act === "reject") openReject();
    else if (button.dataset.act === "label") openLabel();
  });

  // --- Start: the first page came with the page ---------------------------------------------------------

  const first = JSON.parse(document.getElementById("review-queue").textContent);
  first.results.forEach(add);
  setTotal(first.count);
  refresh();
  if (current !== null && !document.getElementById("review-error")) focusCard(current);
})();
