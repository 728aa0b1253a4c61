// Worklist: every scan and pair of the output folder with its review status; keyboard-driven triage.
import { api, badge, bindReviewer, el, message, postJSON, typing } from "./common.js";

const tbody = document.querySelector("#worklist tbody");
const msg = document.getElementById("msg");
const filters = { status: "f-status", kind: "f-kind", modality: "f-modality", q: "f-q" };
let rows = [];
let selected = 0;
let latestLoad = 0;  // filters change faster than the server answers: only the newest request's answer is shown
let reviewer = () => "";

function query() {
  const params = new URLSearchParams();
  for (const [name, id] of Object.entries(filters)) {
    const value = document.getElementById(id).value.trim();
    if (value) params.set(name, value);
  }
  if (document.getElementById("f-flagged").checked) params.set("flagged", "true");
  return params.toString();
}

function select(index) {
  if (!rows.length) return;
  selected = Math.max(0, Math.min(rows.length - 1, index));
  tbody.querySelectorAll("tr").forEach((tr, i) => tr.classList.toggle("selected", i === selected));
  tbody.children[selected]?.scrollIntoView({ block: "nearest" });
}

function open(index = selected) {
  const row = rows[index];
  if (row) window.location.href = `/cases/${encodeURIComponent(row.id)}`;
}

async function load() {
  const ticket = ++latestLoad;
  const data = await (await api(`/api/cases?${query()}`)).json();
  if (ticket !== latestLoad) return;  // an older filter's list arriving late must not replace the newer one
  rows = data.cases;
  document.getElementById("counts").replaceChildren(
    ...Object.entries(data.counts).map(([s, n]) => el("span", {}, badge(s), ` ${n}`)));
  tbody.replaceChildren(...rows.map((row, i) => {
    const where = row.kind === "pair" ? `${row.baseline} → ${row.followup}` : row.visit;
    const flags = row.flags.length ? el("span", { class: "flag", title: row.flags.map(f => f.message).join("\n") },
      `⚑ ${row.flags.length}`) : "";
    const tr = el("tr", { dataset: { id: row.id, status: row.status } },
      el("td", {}, el("a", { href: `/cases/${encodeURIComponent(row.id)}` }, row.subject)), el("td", {}, row.kind),
      el("td", {}, where), el("td", {}, row.modality), el("td", {}, badge(row.status)), el("td", {}, flags),
      el("td", {}, row.reviewer || ""), el("td", { class: "muted" }, (row.updated_at || "").slice(0, 19)));
    tr.addEventListener("click", () => select(i));
    tr.addEventListener("dblclick", () => open(i));
    return tr;
  }));
  message(msg, `${rows.length} of ${data.total} case(s)` + (data.skipped ? ` · ${data.skipped} folder(s) skipped` : ""));
  select(Math.min(selected, rows.length - 1));
  document.body.dataset.ready = "1";
}

async function decide(status) {
  const row = rows[selected];
  if (!row) return;
  try {
    await postJSON(`/api/cases/${encodeURIComponent(row.id)}/decision`, { status, reviewer: reviewer() },
      `"${row.version}"`);
    await load();
    select(selected + 1);
  } catch (error) {
    message(msg, error.status === 409 ? `${row.id} was changed by someone else: list reloaded` : error.message, true);
    if (error.status === 409) await load();
  }
}

document.addEventListener("keydown", (event) => {
  if (event.target.id === "f-q" && event.key === "Escape") { event.target.blur(); return; }
  if (typing(event) || event.ctrlKey || event.metaKey || event.altKey) return;
  const actions = { j: () => select(selected + 1), n: () => select(selected + 1), k: () => select(selected - 1),
    Enter: () => open(), a: () => decide("approved"), f: () => decide("flagged"),
    "/": () => document.getElementById("f-q").focus() };
  if (actions[event.key]) { event.preventDefault(); actions[event.key](); }
});

for (const id of ["f-status", "f-kind", "f-modality", "f-flagged"]) document.getElementById(id).addEventListener("change", load);
document.getElementById("f-q").addEventListener("input", () => { selected = 0; load(); });

const session = await (await api("/api/session")).json();
reviewer = bindReviewer(document.getElementById("reviewer"), session.reviewer);
load().catch((error) => message(msg, error.message, true));
// other reviewers work on the same list: refresh it every 30 s while the tab is visible
setInterval(() => { if (!document.hidden) load().catch(() => {}); }, 30_000);
