// Shared helpers for the worklist and the case view: API calls, reviewer name, status badges.
export async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (_) { /* not JSON */ }
    const error = new Error(`${response.status}: ${detail}`);
    error.status = response.status;
    throw error;
  }
  return response;
}

export async function postJSON(path, body, etag) {
  return api(path, { method: "POST", headers: { "content-type": "application/json", "if-match": etag },
    body: JSON.stringify(body) });
}

export function etagOf(response) { return response.headers.get("etag"); }

const KEY = "koaimg.qa.reviewer";
export function bindReviewer(input, fallback) {
  input.value = localStorage.getItem(KEY) || fallback || "";
  input.addEventListener("change", () => localStorage.setItem(KEY, input.value.trim()));
  return () => input.value.trim();
}

export function badge(status) {
  const span = document.createElement("span");
  span.className = `badge ${status}`;
  span.textContent = status;
  return span;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  return node;
}

export function fmt(value, digits = 2) {
  if (value === null || value === undefined || Number.isNaN(value)) return "";
  return Math.abs(value) >= 100 ? value.toFixed(0) : value.toFixed(digits);
}

export function typing(event) {
  const t = event.target;
  return t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
}

export function message(node, text, isError = false) {
  node.textContent = text;
  node.classList.toggle("error", isError);
}
