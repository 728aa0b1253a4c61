// Case view: NiiVue three-plane viewer (image + segmentation, thickness or Δ with colour bars), regional table,
// MOAKS grid with per-subregion overrides, decisions, and corrections (drawn in the viewer or uploaded as NIfTI).
import { MULTIPLANAR_TYPE, Niivue, SHOW_RENDER } from "/static/vendor/niivue/niivue.js";
import { api, badge, bindReviewer, el, etagOf, fmt, message, postJSON, typing } from "./common.js";

const caseId = decodeURIComponent(window.location.pathname.split("/").pop());
const base = `/api/cases/${encodeURIComponent(caseId)}`;
const askedVersion = new URLSearchParams(window.location.search).get("v");
const msg = document.getElementById("msg");
const viewerMsg = document.getElementById("viewer-msg");
let etag = null;
let detail = null;
let reviewer = () => "";
let nv = null;
let labelLayer = -1;
let drawing = false;
window.koaimgQA = { ready: false };

function conflict(error, target = msg) {
  if (error.status === 409) {
    message(target, "Another reviewer changed this case since you opened it. Reload to see their change, then " +
      "decide again.", true);
    const button = el("button", {}, "Reload");
    button.addEventListener("click", () => window.location.reload());
    target.append(" ", button);
  } else {
    message(target, error.message, true);
  }
}

// ---------------------------------------------------------------------------------------------------- viewer ---
async function startViewer(lut) {
  const v = detail.volumes;
  const background = v.image || v.labels;
  if (!background) { message(viewerMsg, "no image or label map in this case folder"); return false; }
  nv = new Niivue({ backColor: [0, 0, 0, 1], isColorbar: true, dragAndDropEnabled: false, logLevel: "warn",
    show3Dcrosshair: false, crosshairColor: [1, 1, 0, 0.6], multiplanarShowRender: SHOW_RENDER.NEVER,
    multiplanarLayout: MULTIPLANAR_TYPE.GRID, colorbarHeight: 0.03 });
  await nv.attachTo("viewer");
  const list = [{ url: background, name: "image.nii.gz", colormap: "gray", colorbarVisible: false }];
  const layers = [];
  if (v.labels) {
    const opacity = v.delta ? 0.2 : 0.45;  // keep the Δ overlay readable on top of the cartilage labels
    list.push({ url: v.labels, name: "labels.nii.gz", colormap: "gray", opacity, colorbarVisible: false });
    layers.push(["segmentation", list.length - 1, opacity]);
  }
  if (v.thickness) {
    list.push({ url: v.thickness, name: "thickness.nii.gz", colormap: "warm", cal_min: 0.05, cal_max: 4.0,
      opacity: 1.0, colorbarVisible: true });
    layers.push(["thickness (mm)", list.length - 1, 1.0]);
  }
  if (v.delta) {
    // same convention as the report's Δ map: blue = thickening (follow-up − baseline > 0), red = thinning
    list.push({ url: v.delta, name: "delta.nii.gz", colormap: "blue2cyan", colormapNegative: "redyell", cal_min: 0.05,
      cal_max: 1.0, cal_minNeg: -1.0, cal_maxNeg: -0.05, opacity: 1.0, colorbarVisible: true });
    layers.push(["Δ thickness (mm)", list.length - 1, 1.0]);
  }
  await nv.loadVolumes(list);
  if (!v.image) message(viewerMsg, "This case folder holds no MR image (image.nii.gz); the segmentation is shown alone.");
  if (v.labels) {
    labelLayer = 1;
    nv.volumes[labelLayer].setColormapLabel(lut);
  }
  nv.setDrawColormap(lut);
  nv.setSliceType(nv.sliceTypeMultiplanar);
  nv.updateGLVolume();
  const box = document.getElementById("layers");
  for (const [name, index, opacity] of layers) {
    const input = el("input", { type: "checkbox", "data-layer": name });
    input.checked = true;
    input.addEventListener("change", () => nv.setOpacity(index, input.checked ? opacity : 0));
    box.append(el("label", {}, input, ` ${name}`));
  }
  return true;
}

function setupDrawing(lut) {
  if (!detail.correctable || !nv) return;
  document.getElementById("draw-tools").hidden = false;
  const pen = document.getElementById("pen");
  lut.labels.forEach((name, i) => pen.append(el("option", { value: lut.I[i] }, `${lut.I[i]} ${i ? name : "erase"}`)));
  pen.value = "2";
  pen.addEventListener("change", () => nv.setPenValue(Number(pen.value), false));
  const toggle = document.getElementById("draw-toggle");
  toggle.addEventListener("click", async () => {
    if (!drawing) {
      const ok = await nv.loadDrawingFromUrl(detail.volumes.labels);
      if (!ok) { message(viewerMsg, "could not load the segmentation for editing", true); return; }
      drawing = true;
      nv.setDrawingEnabled(true);
      nv.setPenValue(Number(pen.value), false);
      nv.setDrawOpacity(0.6);
      if (labelLayer >= 0) nv.setOpacity(labelLayer, 0);
      toggle.textContent = "Stop editing";
      document.getElementById("draw-undo").disabled = false;
      document.getElementById("draw-submit").disabled = false;
      message(viewerMsg, "Drawing: left-drag paints the chosen label, pen 0 erases. Submit sends the whole map.");
    } else {
      drawing = false;
      nv.setDrawingEnabled(false);
      toggle.textContent = "Resume editing";
    }
    document.body.dataset.drawing = drawing ? "1" : "0";
  });
  document.getElementById("draw-undo").addEventListener("click", () => nv.drawUndo());
  document.getElementById("draw-submit").addEventListener("click", async () => {
    const bytes = await nv.saveImage({ filename: "", isSaveDrawing: true, volumeByIndex: 0 });
    if (!(bytes instanceof Uint8Array)) { message(viewerMsg, "nothing drawn to submit", true); return; }
    await sendCorrection(bytes, "drawn");
  });
}

function setupUpload() {
  if (!detail.correctable) return;
  document.getElementById("upload-tools").hidden = false;
  document.getElementById("upload-submit").addEventListener("click", async () => {
    const file = document.getElementById("upload-file").files[0];
    if (!file) { message(viewerMsg, "choose a NIfTI file first", true); return; }
    await sendCorrection(new Uint8Array(await file.arrayBuffer()), "upload");
  });
}

async function sendCorrection(bytes, source) {
  message(viewerMsg, "validating and re-measuring the corrected segmentation…");
  const params = new URLSearchParams({ source, reviewer: reviewer(), comment: document.getElementById("comment").value,
    based_on: String(detail.shown_version) });
  try {
    const response = await api(`${base}/corrections?${params}`, { method: "POST", body: bytes,
      headers: { "content-type": "application/octet-stream", "if-match": etag } });
    const result = await response.json();
    const changed = result.correction.labels.changed_voxels;
    const pairs = result.pairs.map(p => `${p.pair}: ${p.recomputed ? "change recomputed" : p.reason}`).join("; ");
    sessionStorage.setItem("koaimg.qa.flash", `Stored correction v${result.correction.version} (${changed} voxels ` +
      `changed); measurements recomputed.${pairs ? " " + pairs : ""}`);
    window.location.replace(window.location.pathname);  // show the new version
  } catch (error) {
    conflict(error, viewerMsg);
    if (error.status === 409 || error.status >= 500) {  // never lose a reviewer's drawing: offer it as a file
      const link = el("a", { href: URL.createObjectURL(new Blob([bytes])), download: `${caseId}_correction.nii` },
        "download your correction");
      viewerMsg.append(" ", link);
    }
  }
}

function renderVersions() {
  if (detail.versions.length < 2) return;
  const select = el("select", { id: "seg-version" });
  for (const v of detail.versions) {
    select.append(el("option", { value: String(v) }, v === 0 ? "automated (v0)" : `corrected v${v}`));
  }
  select.value = String(detail.shown_version);
  select.addEventListener("change", () => {
    const latest = detail.versions[detail.versions.length - 1];
    window.location.search = Number(select.value) === latest ? "" : `?v=${select.value}`;
  });
  document.getElementById("layers").append(el("label", {}, "segmentation version ", select));
}

// ---------------------------------------------------------------------------------------------------- tables ---
function renderRegional() {
  const table = detail.regional;
  if (!table || !table.rows.length) return;
  document.getElementById("regional-panel").hidden = false;
  const versions = table.versions.map(String);
  const latest = versions[versions.length - 1];
  const shown = ["tAB", "ThCtAB.Me", "ThCtAB.Max", "VC", "dAB%", "thickness"];  // MOAKS areas are in the grid below
  const metrics = table.metrics.filter(m => shown.includes(m));
  const head = el("tr", {}, el("th", {}, "structure"), el("th", {}, "region"),
    ...metrics.map(m => el("th", { class: "num" }, `${m}${table.units[m] ? ` (${table.units[m]})` : ""}`)));
  const body = table.rows.map(row => el("tr", {}, el("td", {}, row.structure.replace("_cartilage", "")),
    el("td", {}, row.region), ...metrics.map(m => {
      const orig = row.values["0"]?.[m];
      const now = row.values[latest]?.[m];
      const cell = el("td", { class: "num", dataset: { structure: row.structure, region: row.region, metric: m } });
      if (latest !== "0" && orig !== now) {
        cell.append(el("span", { class: "muted" }, fmt(orig)), " → ", el("span", { class: "changed" }, fmt(now)));
      } else {
        cell.append(fmt(now));
      }
      return cell;
    })));
  const caption = latest === "0" ? "" : `original → corrected v${latest}`;
  document.getElementById("regional").replaceChildren(el("p", { class: "muted" }, caption),
    el("table", {}, el("thead", {}, head), el("tbody", {}, ...body)));
}

function gradeSelect(row, grade) {
  const select = el("select", { dataset: { region: row.region, grade } });
  select.append(el("option", { value: "" }, `auto (${row.automated[grade] ?? "–"})`));
  for (const g of [0, 1, 2, 3]) select.append(el("option", { value: String(g) }, String(g)));
  const current = row.override[grade];
  select.value = current === undefined ? "" : String(current);
  select.classList.toggle("overridden", current !== undefined);
  select.addEventListener("change", async () => {
    select.classList.toggle("overridden", select.value !== "");
    try {
      const response = await postJSON(`${base}/grades`, { region: row.region, grade,
        value: select.value === "" ? null : Number(select.value), reviewer: reviewer(),
        comment: document.getElementById("comment").value }, etag);
      etag = etagOf(response);
      document.getElementById("version").textContent = `version ${etag.replaceAll('"', "")}`;
      message(msg, `${row.region} ${grade.replace("moaks_", "").replace("_grade", "")} grade saved`);
    } catch (error) {
      conflict(error);
    }
  });
  return select;
}

function renderMoaks() {
  if (!detail.moaks || !detail.moaks.length) return;
  document.getElementById("moaks-panel").hidden = false;
  const head = el("tr", {}, el("th", {}, "subregion"), el("th", { class: "num" }, "any-loss area %"),
    el("th", {}, "any-loss grade"), el("th", { class: "num" }, "full-thickness %"), el("th", {}, "full-thickness grade"));
  const body = detail.moaks.map(row => el("tr", { dataset: { region: row.region } }, el("td", {}, row.region),
    el("td", { class: "num" }, fmt(row["any_loss_area%"], 1)), el("td", {}, gradeSelect(row, "moaks_any_loss_grade")),
    el("td", { class: "num" }, fmt(row["full_thickness_area%"], 1)),
    el("td", {}, gradeSelect(row, "moaks_full_thickness_grade"))));
  document.getElementById("moaks").replaceChildren(el("table", {}, el("thead", {}, head), el("tbody", {}, ...body)));
}

function renderChange() {
  if (!detail.change) return;
  document.getElementById("change-panel").hidden = false;
  const keep = detail.change.filter(r => ["ThCtAB.Me", "thickness", "VC", "dAB%"].includes(r.metric));
  const rows = keep.length ? keep : detail.change;
  const head = el("tr", {}, ...["structure", "region", "metric", "baseline", "follow-up", "Δ", "Δ %", "> SDD"]
    .map((h, i) => el("th", { class: i >= 3 && i < 7 ? "num" : "" }, h)));
  const body = rows.map(r => el("tr", {}, el("td", {}, r.structure.replace("_cartilage", "")), el("td", {}, r.region),
    el("td", {}, r.metric), el("td", { class: "num" }, fmt(r.baseline)), el("td", { class: "num" }, fmt(r.followup)),
    el("td", { class: "num" }, fmt(r.delta)), el("td", { class: "num" }, fmt(r.pct_delta, 1)),
    el("td", {}, String(r.beyond_sdd ?? ""))));
  const note = detail.shown_version ? `recomputed v${detail.shown_version} after a correction` : "";
  document.getElementById("change").replaceChildren(el("p", { class: "muted" }, note),
    el("table", {}, el("thead", {}, head), el("tbody", {}, ...body)));
}

function renderPictures() {
  const box = document.getElementById("pictures");
  const titles = { overlay: "Ultrasound frame with the measurement lines", thickness_map:
    "Femoral thickness map (unrolled)", delta_map: "Δ thickness map" };
  const items = Object.entries(detail.images);
  box.hidden = !items.length;
  box.replaceChildren(...items.map(([role, url]) => el("figure", {}, el("figcaption", {}, titles[role] || role),
    el("img", { class: "map", src: url, alt: titles[role] || role, "data-role": role }))));
}

function describe(event) {
  if (event.action !== "correction" && event.action !== "change_recompute") return event.after ?? "";
  let d = {};
  try { d = JSON.parse(event.after); } catch (_) { return event.after ?? ""; }
  if (event.action === "correction") return `v${d.version} (${d.source}, ${d.labels?.changed_voxels ?? "?"} voxels changed)`;
  return d.recomputed ? `v${d.version}` : `not recomputed: ${d.reason}`;
}

function renderHistory() {
  const rows = detail.audit.slice().reverse().map(a => el("tr", {}, el("td", { class: "muted" }, a.at.slice(0, 19)),
    el("td", {}, a.reviewer), el("td", {}, a.action), el("td", {}, a.field || ""),
    el("td", {}, `${a.before ?? ""} → ${describe(a)}`), el("td", {}, a.comment || "")));
  document.getElementById("history").replaceChildren(rows.length ? el("table", {}, el("tbody", {}, ...rows))
    : el("p", { class: "muted" }, "no review yet"));
}

function renderHeader() {
  const title = detail.kind === "pair" ? `${detail.subject} · ${detail.baseline} → ${detail.followup}`
    : `${detail.subject} · ${detail.visit} · ${detail.modality}`;
  document.getElementById("title").textContent = title;
  document.title = `koaimg QA · ${title}`;
  document.getElementById("status").replaceChildren(badge(detail.state.status));
  document.getElementById("version").textContent = `version ${etag.replaceAll('"', "")}` +
    (detail.shown_version ? ` · segmentation v${detail.shown_version}` : "");
  document.getElementById("flags").replaceChildren(...detail.flags.map(f =>
    el("div", { class: "flag" }, `⚑ ${f.code}: ${f.message}`)));
}

// ---------------------------------------------------------------------------------------------------- actions ---
async function decide(status) {
  try {
    const response = await postJSON(`${base}/decision`, { status, reviewer: reviewer(),
      comment: document.getElementById("comment").value }, etag);
    etag = etagOf(response);
    detail.state = await response.json();
    renderHeader();
    message(msg, `${status} by ${detail.state.reviewer}`);
  } catch (error) {
    conflict(error);
  }
}

function go(id) { if (id) window.location.href = `/cases/${encodeURIComponent(id)}`; }

document.getElementById("approve").addEventListener("click", () => decide("approved"));
document.getElementById("flag").addEventListener("click", () => decide("flagged"));
document.getElementById("reject").addEventListener("click", () => decide("rejected"));
document.getElementById("next").addEventListener("click", () => go(detail.next_unreviewed_id || detail.next_id));
document.addEventListener("keydown", (event) => {
  if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
  const actions = { a: () => decide("approved"), f: () => decide("flagged"), r: () => decide("rejected"),
    n: () => go(detail.next_unreviewed_id || detail.next_id), j: () => go(detail.next_id), k: () => go(detail.prev_id) };
  if (actions[event.key]) { event.preventDefault(); actions[event.key](); }
});

async function main() {
  const session = await (await api("/api/session")).json();
  reviewer = bindReviewer(document.getElementById("reviewer"), session.reviewer);
  const response = await api(askedVersion === null ? base : `${base}?version=${encodeURIComponent(askedVersion)}`);
  etag = etagOf(response);
  detail = await response.json();
  const flash = sessionStorage.getItem("koaimg.qa.flash");
  if (flash) { message(viewerMsg, flash); sessionStorage.removeItem("koaimg.qa.flash"); }
  renderHeader();
  renderRegional();
  renderMoaks();
  renderChange();
  renderPictures();
  renderHistory();
  const lut = await (await api("/api/labels.json")).json();
  let viewer = "none";
  if (Object.keys(detail.volumes).length) {
    try {
      viewer = (await startViewer(lut)) ? "ok" : "none";
      setupDrawing(lut);
    } catch (error) {
      viewer = "error";
      message(viewerMsg, `viewer: ${error.message}`, true);
    }
  } else {
    document.getElementById("viewer-box").hidden = true;
  }
  setupUpload();
  renderVersions();
  window.koaimgQA = { ready: true, nv, detail };
  document.body.dataset.viewer = viewer;
  document.body.dataset.ready = "1";
}

main().catch((error) => { message(msg, error.message, true); document.body.dataset.ready = "error"; });
