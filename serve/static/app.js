// The tmv serve page: every text from the server goes in through textContent (never innerHTML).
"use strict";

const PAGE = 24;
const $ = (id) => document.getElementById(id);
let current = null;   // {q, kind, file, like, label, after, before, folder, offset, cutoff, showWeak}
let shown = [];       // image hits on the page, for the viewer's previous / next
let hasCaptions = false;

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
  status.setAttribute("role", isError ? "alert" : "status");
}

function baseName(path) { return path.split("/").pop(); }

async function api(url, options) {
  const response = await fetch(url, options);
  const body = await response.json().catch(() => ({error: `HTTP ${response.status}`}));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

async function loadInfo() {
  const info = await api("/api/info");
  const list = $("info-list");
  list.replaceChildren();
  const rows = [["images", String(info.counts.images)], ["captions", String(info.counts.captions)],
                ["model", `${info.model.image_arch} · ${info.model.fingerprint}`], ["checkpoint", info.model.checkpoint],
                ["index", info.folder], ["folders", info.folders.join("\n") || "(none)"], ["updated", info.updated || ""]];
  for (const [key, value] of rows) list.append(el("dt", {textContent: key}), el("dd", {textContent: value}));
  hasCaptions = info.counts.captions > 0;
  $("kind").querySelector('option[value="captions"]').disabled = !hasCaptions;
  if (!hasCaptions) $("kind").value = "images";
  $("info").querySelector("summary").textContent =
    `Index: ${info.counts.images} images` + (hasCaptions ? `, ${info.counts.captions} captions` : "");
}

const FILTERS = ["after", "before", "folder"];

function searchUrl(query, kind, k, offset) {
  const params = new URLSearchParams({kind, k: String(k), offset: String(offset)});
  if (query.q) params.set("q", query.q);
  if (query.like !== undefined) params.set("like", String(query.like));
  for (const name of FILTERS) if (query[name] && kind === "images") params.set(name, query[name]);
  return "/api/search?" + params;
}

// The page's own address holds a text or "more like this" search, so it can be linked, bookmarked,
// reloaded, and reached again with back / forward. An uploaded image cannot be put in an address.
function pageUrl(query) {
  const params = new URLSearchParams();
  if (query.q) params.set("q", query.q);
  if (query.like !== undefined) params.set("like", String(query.like));
  if (query.label) params.set("label", query.label);
  if (query.kind && query.kind !== "images") params.set("kind", query.kind);
  for (const name of FILTERS) if (query[name]) params.set(name, query[name]);
  return params.size ? "/?" + params : "/";
}

function queryFromUrl() {
  const params = new URLSearchParams(location.search);
  if (params.get("view") === "duplicates") return {view: "duplicates", of: Number(params.get("of")) || undefined};
  const query = {q: params.get("q") || undefined, kind: params.get("kind") || "images"};
  const like = params.get("like");
  if (like !== null && /^\d+$/.test(like)) { query.like = Number(like); query.label = params.get("label") || `image ${like}`; }
  for (const name of FILTERS) query[name] = params.get(name) || "";
  return query;
}

function fillForm(query) {
  $("q").value = query.q || "";
  if (query.kind && !$("kind").querySelector(`option[value="${query.kind}"]`)?.disabled) $("kind").value = query.kind;
  for (const name of FILTERS) $(name).value = query[name] || "";
}

function formFilters() {
  return Object.fromEntries(FILTERS.map((name) => [name, $(name).value.trim()]));
}

function fetchHits(query, kind, k, offset) {
  const url = searchUrl(query, kind, k, offset);
  if (query.file) {
    return api(url, {method: "POST", body: query.file,
                     headers: {"content-type": query.file.type || "application/octet-stream"}});
  }
  return api(url);
}

function imageCard(hit) {
  const open = el("button", {type: "button", className: "open", title: "Show the full image"},
                  el("img", {src: `/api/thumb/${hit.id}`, alt: baseName(hit.path), loading: "lazy"}));
  open.addEventListener("click", () => showImage(shown.findIndex((h) => h.id === hit.id)));
  const like = el("button", {type: "button", className: "like", textContent: "More like this"});
  like.addEventListener("click", () => search({like: hit.id, label: baseName(hit.path), ...formFilters()}));
  const extra = [];
  if (hit.similar) {
    const similar = el("button", {type: "button", className: "similar",
                                  textContent: `${hit.similar} similar photo${hit.similar === 1 ? "" : "s"}`});
    similar.addEventListener("click", () => showDuplicates(hit.id));
    extra.push(similar);
  }
  const caption = el("figcaption", {title: hit.path},
                     el("span", {className: "score", textContent: `#${hit.rank} · ${hit.score.toFixed(3)}`}),
                     el("br"), baseName(hit.path));
  const weak = current.cutoff !== null && current.cutoff !== undefined && hit.score < current.cutoff;
  return el("figure", {className: weak ? "weak" : "", hidden: weak && !current.showWeak}, open, caption, like, ...extra);
}

function weakCards() { return [...$("grid").querySelectorAll("figure.weak")]; }

// Results far below the best (service.RELATIVE_CUTOFF) are folded behind one button, not shown as noise.
function updateWeaker() {
  const folded = weakCards().filter((card) => card.hidden).length;
  $("weaker").hidden = folded === 0;
  $("weaker").textContent = `Show ${folded} weaker result${folded === 1 ? "" : "s"}`;
  return folded;
}

function captionItem(hit) {
  return el("li", {}, el("span", {className: "score", textContent: `${hit.score.toFixed(3)} `}), hit.caption);
}

function render(kind, result, append) {
  if (kind === "images") {
    if (!append) { $("grid").replaceChildren(); shown = []; }
    shown.push(...result.results);
    $("grid").append(...result.results.map(imageCard));
  } else {
    if (!append) $("caption-list").replaceChildren();
    $("caption-list").append(...result.results.map(captionItem));
    $("captions").hidden = false;
  }
}

function describe(query) {
  const filters = [query.after && `from ${query.after}`, query.before && `before ${query.before}`,
                   query.folder && `in ${query.folder}`].filter(Boolean);
  const what = query.like !== undefined ? `more like ${query.label}`
    : [query.q, query.file && `image ${query.file.name || "(dropped)"}`].filter(Boolean).join(" + ");
  return [what, ...filters].join(", ");
}

async function search(query, append = false, history = "push") {
  showView("results");
  if (!append) {
    const kind = query.like !== undefined ? "images" : (query.kind || $("kind").value);
    current = {...query, kind, offset: 0, cutoff: null, showWeak: false};
    $("query-image").hidden = !query.file;
    if (query.file) $("query-thumb").src = URL.createObjectURL(query.file);
    if (!query.file && history !== "none") {
      const url = pageUrl(current);
      if (history === "replace" || url === location.pathname + location.search) window.history.replaceState(null, "", url);
      else window.history.pushState(null, "", url);
    }
  } else {
    current.offset += PAGE;
  }
  const {kind, offset} = current;
  setStatus(`searching ${describe(current)}…`);
  try {
    const main = await fetchHits(current, kind, PAGE, offset);
    if (!append) {
      $("captions").hidden = true;
      $("grid").replaceChildren();
      shown = [];
      if (kind === "images") current.cutoff = main.cutoff;
    }
    render(kind, main, append);
    if (kind === "images" && hasCaptions && !append) render("captions", await fetchHits(current, "captions", 8, 0), false);
    finish(kind, main.more);
  } catch (error) {
    setStatus(`error: ${error.message}`, true);
  }
}

function finish(kind, more) {
  const folded = kind === "images" ? updateWeaker() : 0;
  $("more").hidden = !more || folded > 0;  // deeper pages hold only weaker results
  $("more").dataset.more = more ? "1" : "";
  const count = kind === "images" ? shown.length - folded : $("caption-list").children.length;
  const filtered = FILTERS.some((name) => current[name]);
  if (!count && !folded) setStatus(filtered ? `no ${kind} match ${describe(current)}` : `no ${kind} in the index yet`);
  else setStatus(`${count} ${kind} for ${describe(current)}` + (folded ? ` · ${folded} weaker hidden` : ""));
}

function showWeaker() {
  current.showWeak = true;
  for (const card of weakCards()) card.hidden = false;
  finish("images", $("more").dataset.more === "1");
}

function clearResults() {
  current = null;
  shown = [];
  $("grid").replaceChildren();
  $("caption-list").replaceChildren();
  $("captions").hidden = true;
  $("more").hidden = $("weaker").hidden = true;
  setStatus("Type a query, or drop an image anywhere on the page.");
}

async function searchFromUrl(history) {
  const query = queryFromUrl();
  if (query.view === "duplicates") { await showDuplicates(query.of, "none"); return; }
  showView("results");
  fillForm(query);
  if (query.q || query.like !== undefined) await search(query, false, history);
  else clearResults();
}

function showView(name) {
  $("results").hidden = name !== "results";
  $("dupes").hidden = name !== "duplicates";
  $("more").hidden = $("more").hidden || name !== "results";
}

function dupeCard(id, path, keep) {
  const open = el("button", {type: "button", className: "open", title: "Show the full image"},
                  el("img", {src: `/api/thumb/${id}`, alt: baseName(path), loading: "lazy"}));
  open.addEventListener("click", () => showImage(shown.findIndex((h) => h.id === id)));
  const caption = el("figcaption", {title: path}, ...(keep ? [el("span", {className: "badge", textContent: "keep"}), " "] : []),
                     baseName(path));
  return el("figure", {className: keep ? "keep" : ""}, open, caption);
}

// The near-duplicate groups (GET /api/duplicates), or the one group of image `of`.
async function showDuplicates(of, history = "push") {
  const url = "/?view=duplicates" + (of !== undefined ? `&of=${of}` : "");
  if (history === "push" && url !== location.pathname + location.search) window.history.pushState(null, "", url);
  if (history === "replace") window.history.replaceState(null, "", url);
  showView("duplicates");
  $("dupe-groups").replaceChildren();
  $("weaker").hidden = true;
  setStatus("finding near-duplicates… (the first time decodes the candidates: minutes on a large library)");
  try {
    const {groups} = await api("/api/duplicates");
    const chosen = of === undefined ? groups : groups.filter((g) => g.ids.includes(of));
    shown = [];
    for (const [n, group] of chosen.entries()) {
      shown.push(...group.ids.map((id, i) => ({id, path: group.paths[i], rank: i + 1, score: group.similarity})));
      $("dupe-groups").append(el("section", {className: "dupe-group"},
        el("h2", {textContent: `${group.paths.length} copies · similarity ${group.similarity.toFixed(3)}` +
                               (of === undefined ? ` · group ${n + 1}` : "")}),
        el("div", {className: "grid"}, ...group.ids.map((id, i) => dupeCard(id, group.paths[i], i === 0)))));
    }
    const copies = chosen.reduce((sum, g) => sum + g.paths.length - 1, 0);
    setStatus(chosen.length ? `${chosen.length} group${chosen.length === 1 ? "" : "s"} of near-duplicates, ${copies} extra ` +
              `cop${copies === 1 ? "y" : "ies"}` : "no near-duplicates found");
  } catch (error) {
    setStatus(`error: ${error.message}`, true);
  }
}

function showImage(index) {
  if (index < 0 || index >= shown.length) return;
  const hit = shown[index];
  $("viewer").dataset.index = String(index);
  $("full").src = `/api/image/${hit.id}`;
  $("full").alt = baseName(hit.path);
  $("full-label").textContent = `#${hit.rank} · ${hit.score.toFixed(3)} · ${hit.path}`;
  if (!$("viewer").open) $("viewer").showModal();
}

function searchFile(file) {
  if (!file) return;
  $("q").value = "";
  search({file, ...formFilters()});
}

document.addEventListener("DOMContentLoaded", () => {
  // the info first: it says whether captions exist, which the first search (maybe from the address) needs
  loadInfo().catch((error) => setStatus(`error: ${error.message}`, true)).then(() => searchFromUrl("replace"));
  window.addEventListener("popstate", () => searchFromUrl("none"));
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    const q = $("q").value.trim();
    if (!q) { setStatus("type a query first, or pick an image", true); return; }
    loadInfo().catch(() => {});
    search({q, kind: $("kind").value, ...formFilters()});
  });
  $("weaker").addEventListener("click", showWeaker);
  $("dupes-button").addEventListener("click", () => showDuplicates(undefined));
  $("file").addEventListener("change", () => { searchFile($("file").files[0]); $("file").value = ""; });
  $("pick").addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("file").click(); }
  });
  $("more").addEventListener("click", () => search(current, true));
  $("viewer").addEventListener("keydown", (event) => {
    const index = Number($("viewer").dataset.index);
    if (event.key === "ArrowRight") showImage(index + 1);
    if (event.key === "ArrowLeft") showImage(index - 1);
  });
  document.addEventListener("keydown", (event) => {
    const typing = ["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName);
    if (event.key === "/" && !typing && !$("viewer").open) { event.preventDefault(); $("q").focus(); }
  });
  let depth = 0;
  window.addEventListener("dragenter", (event) => { event.preventDefault(); depth++; $("drop").hidden = false; });
  window.addEventListener("dragleave", () => { if (--depth <= 0) { depth = 0; $("drop").hidden = true; } });
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    depth = 0;
    $("drop").hidden = true;
    searchFile(event.dataTransfer.files[0]);
  });
});
