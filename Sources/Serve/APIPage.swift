// GET /: the interactive API page. Self-contained (no CDN, works offline): it reads /openapi.json
// and gives each route a form that sends a request and shows the answer as it arrives (streams
// included). Everything from the server is shown with textContent, never parsed as HTML.

enum APIPage {
    static let examples: [String: String] = [
        "/v1/chat/completions": #"{"messages": [{"role": "user", "content": "Write a haiku about the sea."}], "max_tokens": 64, "temperature": 0, "stream": true}"#,
        "/v1/completions": #"{"prompt": "The capital of France is", "max_tokens": 16, "temperature": 0}"#,
        "/v1/chat/interactive": #"{"prompt": "Hello! Who are you?", "session_id": 1, "interactive_mode": true, "stream": true, "request_output_len": 64}"#,
    ]

    static let html = page

    /// The page's script, served from /api-page.js so that the page's policy can forbid inline scripts.
    static var script: String {
        let examplesJSON = "{" + examples.sorted { $0.key < $1.key }.map { "\"\($0.key)\": \($0.value)" }.joined(separator: ", ") + "}"
        return scriptSource.replacingOccurrences(of: "__EXAMPLES__", with: examplesJSON)
    }

    /// No inline script or style may run, nothing may load from elsewhere.
    static let contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

    private static let page = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lmdeploy-swift API</title>
<style>
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 60rem; padding: 1rem; color: #222; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.05rem; margin: 0; font-family: ui-monospace, monospace; }
section { border: 1px solid #ccc; border-radius: 6px; margin: 0.8rem 0; padding: 0.6rem 0.8rem; }
.method { display: inline-block; min-width: 3.5rem; font-weight: bold; }
.get { color: #0a6; } .post { color: #06c; }
textarea { width: 100%; min-height: 6rem; font-family: ui-monospace, monospace; font-size: 0.85rem; box-sizing: border-box; }
pre { background: #f6f6f6; padding: 0.5rem; white-space: pre-wrap; word-break: break-word; max-height: 24rem; overflow: auto; font-size: 0.85rem; }
.status { font-weight: bold; margin-left: 0.5rem; }
details summary { cursor: pointer; color: #555; }
</style>
</head>
<body>
<h1>lmdeploy-swift API</h1>
<p id="intro">Loading <a href="/openapi.json">/openapi.json</a>…</p>
<p><label>API key (if the server needs one): <input id="key" type="password" size="40" autocomplete="off"></label></p>
<div id="routes"></div>
<script src="/api-page.js"></script>
</body>
</html>
"""#

    private static let scriptSource = #"""
"use strict";
const examples = __EXAMPLES__;
function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  for (const c of children) e.append(c);
  return e;
}
function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const key = document.getElementById("key").value;
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}
async function send(method, path, body, out, status) {
  out.textContent = "";
  status.textContent = "…";
  try {
    const response = await fetch(path, { method, headers: headers(method === "POST"), body: method === "POST" ? body : undefined });
    status.textContent = response.status + " " + response.statusText;
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      out.textContent += decoder.decode(value, { stream: true });
    }
  } catch (e) {
    status.textContent = "failed: " + e;
  }
}
function route(path, method, op) {
  const out = el("pre", { className: "answer" });
  const status = el("span", { className: "status" });
  const section = el("section", { id: "route" + path.replaceAll("/", "-") },
    el("h2", {}, el("span", { className: "method " + method }, method.toUpperCase()), " " + path),
    el("p", {}, op.summary || ""));
  let body = null;
  if (method === "post") {
    body = el("textarea", { spellcheck: false, value: JSON.stringify(examples[path] || {}, null, 2) });
    section.append(body);
  }
  const button = el("button", { type: "button", textContent: "Send" });
  button.addEventListener("click", () => send(method.toUpperCase(), path, body ? body.value : null, out, status));
  section.append(el("div", {}, button, status), out);
  return section;
}
async function load() {
  const response = await fetch("/openapi.json", { headers: headers(false) });
  if (!response.ok) {
    document.getElementById("intro").textContent = "GET /openapi.json answered " + response.status + ": enter the API key and reload.";
    return;
  }
  const doc = await response.json();
  document.getElementById("intro").textContent = doc.info.description;
  const routes = document.getElementById("routes");
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) routes.append(route(path, method, op));
  }
  const schemas = el("details", {}, el("summary", { textContent: "Schemas" }),
    el("pre", { textContent: JSON.stringify(doc.components.schemas, null, 2) }));
  routes.append(schemas);
}
document.getElementById("key").addEventListener("change", load);
load();
"""#
}
