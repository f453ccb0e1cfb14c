// The tmv serve page: every text from the server goes in through textContent (never innerHTML).
"use strict";

const PAGE = 24;
const $ = (id) => document.getElementById(id);
let current = null;   // {q, kind, file, like, offset}
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

function searchUrl(query, kind, k, offset) {
  const params = new URLSearchParams({kind, k: String(k), offset: String(offset)});
  if (query.q) params.set("q", query.q);
  if (query.like !== undefined) params.set("like", String(query.like));
  return "/api/search?" + params;
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
  like.addEventListener("click", () => search({like: hit.id, label: baseName(hit.path)}));
  const caption = el("figcaption", {title: hit.path},
                     el("span", {className: "score", textContent: `#${hit.rank} · ${hit.score.toFixed(3)}`}),
                     el("br"), baseName(hit.path));
  return el("figure", {}, open, caption, like);
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
  if (query.like !== undefined) return `more like ${query.label}`;
  return [query.q, query.file && `image ${query.file.name || "(dropped)"}`].filter(Boolean).join(" + ");
}

async function search(query, append = false) {
  if (!append) {
    const kind = query.like !== undefined ? "images" : $("kind").value;
    current = {...query, kind, offset: 0};
    $("query-image").hidden = !query.file;
    if (query.file) $("query-thumb").src = URL.createObjectURL(query.file);
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
    }
    render(kind, main, append);
    if (kind === "images" && hasCaptions && !append) render("captions", await fetchHits(current, "captions", 8, 0), false);
    $("more").hidden = !main.more;
    const count = (kind === "images" ? shown.length : $("caption-list").children.length);
    setStatus(count ? `${count} ${kind} for ${describe(current)}` : `no ${kind} in the index yet`);
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
  search({file});
}

document.addEventListener("DOMContentLoaded", () => {
  loadInfo().catch((error) => setStatus(`error: ${error.message}`, true));
  $("search").addEventListener("submit", (event) => {
    event.preventDefault();
    const q = $("q").value.trim();
    if (!q) { setStatus("type a query first, or pick an image", true); return; }
    loadInfo().catch(() => {});
    search({q});
  });
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
