// The chat page's script (served as /chat.js; the page's policy allows no inline script).
// It speaks lmdeploy's /v1/chat/interactive to its own origin: one session per tab, answers
// streamed as JSON lines. Model text reaches the DOM only through textContent and createElement
// (a small Markdown renderer below); it is never parsed as HTML.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const transcript = $("transcript"), prompt = $("prompt"), send = $("send"), cancelButton = $("cancel"), resetButton = $("reset");
  const notice = $("notice"), status = $("status"), announcer = $("announcer");

  // ------------------------------------------------------------------ session
  /** A random id below 2^53 (exact in JSON and in JavaScript numbers): unguessable by other tabs. */
  function newSessionId() {
    const a = new Uint32Array(2);
    crypto.getRandomValues(a);
    return (a[0] & 0x1fffff) * 4294967296 + a[1] || 1;
  }
  const state = {
    sessionId: newSessionId(),
    turns: 0,          // turns the server recorded in this session's history
    history: 0,        // tokens in the session's history (the server's history_tokens)
    sessionLen: null,
    running: null,     // the turn being answered
  };
  document.body.dataset.sessionId = String(state.sessionId);
  $("session-id").textContent = String(state.sessionId);

  // ------------------------------------------------------------------ settings
  const numeric = {
    "max-new-tokens": { key: "request_output_len", parse: (v) => parseInt(v, 10), ok: (n) => Number.isInteger(n) && n >= 1, what: "a whole number ≥ 1" },
    "temperature": { key: "temperature", parse: Number, ok: (n) => n >= 0 && n <= 2, what: "between 0 and 2" },
    "top-p": { key: "top_p", parse: Number, ok: (n) => n > 0 && n <= 1, what: "above 0 and at most 1" },
    "top-k": { key: "top_k", parse: (v) => parseInt(v, 10), ok: (n) => Number.isInteger(n) && n >= 0, what: "a whole number ≥ 0" },
    "repetition-penalty": { key: "repetition_penalty", parse: Number, ok: (n) => n > 0 && n <= 10, what: "above 0 and at most 10" },
  };
  const storageKey = "lmdeploy-swift-chat-settings";
  function loadSettings() {
    let saved = {};
    try { saved = JSON.parse(localStorage.getItem(storageKey) || "{}") || {}; } catch (e) { saved = {}; }
    for (const id of [...Object.keys(numeric), "system"]) {
      if (typeof saved[id] === "string") $(id).value = saved[id];
    }
  }
  function saveSettings() {
    const values = {};
    for (const id of [...Object.keys(numeric), "system"]) values[id] = $(id).value;
    try { localStorage.setItem(storageKey, JSON.stringify(values)); } catch (e) { /* private mode: not kept */ }
  }
  function showOutputs() {
    for (const id of ["temperature", "top-p", "repetition-penalty"]) $(id + "-value").textContent = $(id).value;
  }
  /** The sampling fields of a request, or null after marking the fields that are wrong. */
  function readSettings() {
    const out = {};
    const bad = [];
    for (const [id, spec] of Object.entries(numeric)) {
      const input = $(id);
      const n = spec.parse(input.value);
      if (Number.isNaN(n) || !spec.ok(n)) {
        input.setAttribute("aria-invalid", "true");
        bad.push(input.labels[0].firstChild.textContent.trim() + " must be " + spec.what);
      } else {
        input.removeAttribute("aria-invalid");
        out[spec.key] = n;
      }
    }
    if (bad.length) {
      showNotice(bad.join("; ") + ".");
      $("settings").open = true;
      return null;
    }
    return out;
  }

  // ------------------------------------------------------------------ Markdown (safe: DOM only)
  function el(tag, className, text) {
    const e = document.createElement(tag);
    if (className) e.className = className;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  const INLINE = /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)|\*\*(?=\S)([\s\S]*?\S)\*\*|__(?=\S)([\s\S]*?\S)__(?![A-Za-z0-9])|(?<![*\w])\*(?=[^\s*])([^*]*?[^\s*])\*(?!\w)|(?<![_A-Za-z0-9])_(?=[^\s_])([^_]*?[^\s_])_(?![_A-Za-z0-9])|~~(?=\S)([\s\S]*?\S)~~|\[([^\]\n]+)\]\((https?:\/\/[^\s()]+)\)/g;

  /** Appends `text` with inline Markdown (code, bold, italic, strike-through, http links) to `parent`. */
  function inline(parent, text, depth) {
    if (depth > 4) { parent.append(text); return; }
    let last = 0;
    const matches = [...text.matchAll(INLINE)];
    for (const m of matches) {
      if (m.index > last) parent.append(text.slice(last, m.index));
      last = m.index + m[0].length;
      if (m[1] !== undefined) {
        parent.append(el("code", null, m[2].length > 2 && m[2].startsWith(" ") && m[2].endsWith(" ") ? m[2].slice(1, -1) : m[2]));
      } else if (m[3] !== undefined || m[4] !== undefined) {
        const b = el("strong"); inline(b, m[3] ?? m[4], depth + 1); parent.append(b);
      } else if (m[5] !== undefined || m[6] !== undefined) {
        const i = el("em"); inline(i, m[5] ?? m[6], depth + 1); parent.append(i);
      } else if (m[7] !== undefined) {
        const s = el("del"); inline(s, m[7], depth + 1); parent.append(s);
      } else {
        let url = null;
        try { url = new URL(m[9]); } catch (e) { url = null; }
        if (url && (url.protocol === "http:" || url.protocol === "https:")) {
          const a = el("a", null, m[8]);
          a.href = url.href;
          a.rel = "noopener noreferrer nofollow";
          a.target = "_blank";
          parent.append(a);
        } else {
          parent.append(m[0]);
        }
      }
    }
    if (last < text.length) parent.append(text.slice(last));
  }

  /** Lines joined by line breaks, each with inline Markdown. */
  function lines(parent, list) {
    list.forEach((line, i) => {
      if (i) parent.append(el("br"));
      inline(parent, line, 0);
    });
  }

  function codeBlock(code, lang) {
    const box = el("div", "codeblock");
    const bar = el("div", "codebar");
    bar.append(el("span", null, lang || "code"));
    const copy = el("button", "copy", "Copy");
    copy.type = "button";
    copy.setAttribute("aria-label", "Copy " + (lang ? lang + " " : "") + "code");
    copy.addEventListener("click", () => copyText(code, copy));
    bar.append(copy);
    const pre = el("pre");
    const c = el("code", null, code);
    if (lang) c.dataset.lang = lang;
    pre.append(c);
    box.append(bar, pre);
    return box;
  }

  const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)[^`]*$/;
  const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
  const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
  const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
  const QUOTE = /^ {0,3}>\s?(.*)$/;

  /** Renders Markdown `text` into `container` (replacing what it held). An unclosed code fence
      (an answer still streaming) renders as a code block so far. */
  function renderMarkdown(container, text) {
    const out = [];
    const src = text.replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    while (i < src.length) {
      const line = src[i];
      let m;
      if ((m = FENCE.exec(line))) {
        const fence = m[1], lang = m[2];
        // Closed by a line of at least as many of the same fence characters.
        const closing = new RegExp("^ {0,3}" + (fence[0] === "`" ? "`" : "~") + "{" + fence.length + ",}\\s*$");
        const body = [];
        i++;
        while (i < src.length && !closing.test(src[i])) {
          body.push(src[i]);
          i++;
        }
        i++; // the closing fence
        out.push(codeBlock(body.join("\n"), lang));
      } else if (line.trim() === "") {
        i++;
      } else if ((m = HEADING.exec(line))) {
        const h = el("h" + Math.min(6, m[1].length + 2));
        inline(h, m[2], 0);
        out.push(h);
        i++;
      } else if (RULE.test(line)) {
        out.push(el("hr"));
        i++;
      } else if (QUOTE.test(line)) {
        const body = [];
        while (i < src.length && (m = QUOTE.exec(src[i]))) { body.push(m[1]); i++; }
        const q = el("blockquote");
        const p = el("p");
        lines(p, body);
        q.append(p);
        out.push(q);
      } else if ((m = ITEM.exec(line))) {
        const ordered = /\d/.test(m[2]);
        const list = el(ordered ? "ol" : "ul");
        if (ordered && parseInt(m[2], 10) !== 1) list.start = parseInt(m[2], 10);
        let item = null, itemLines = [];
        const flush = () => { if (item) { lines(item, itemLines); list.append(item); } };
        while (i < src.length) {
          const l = src[i];
          const mm = ITEM.exec(l);
          if (mm && /\d/.test(mm[2]) === ordered) {
            flush();
            item = el("li");
            itemLines = [mm[3]];
          } else if (l.trim() !== "" && !mm && /^\s+/.test(l) && item) {
            itemLines.push(l.trim());          // a continuation line of the item
          } else {
            break;
          }
          i++;
        }
        flush();
        out.push(list);
      } else {
        const body = [];
        while (i < src.length && src[i].trim() !== "" && !FENCE.test(src[i]) && !HEADING.test(src[i]) && !ITEM.test(src[i]) && !QUOTE.test(src[i]) && !RULE.test(src[i])) {
          body.push(src[i]);
          i++;
        }
        const p = el("p");
        lines(p, body);
        out.push(p);
      }
    }
    container.replaceChildren(...out);
  }

  async function copyText(text, button) {
    let ok = false;
    try {
      if (navigator.clipboard && window.isSecureContext) { await navigator.clipboard.writeText(text); ok = true; }
    } catch (e) { ok = false; }
    if (!ok) {
      // Pages served over plain http to another machine are not a secure context: no Clipboard API.
      const area = el("textarea", "offscreen");
      area.value = text;
      area.setAttribute("readonly", "");
      document.body.append(area);
      area.select();
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      area.remove();
      button.focus();
    }
    button.textContent = ok ? "Copied" : "Copy failed";
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  }

  // ------------------------------------------------------------------ transcript
  function addMessage(role, text) {
    const item = el("li", "msg " + role);
    item.append(el("p", "who", role === "user" ? "You" : "Assistant"));
    const body = el("div", "body");
    item.append(body);
    if (role === "user") body.textContent = text;
    transcript.append(item);
    $("empty").hidden = true;
    scrollToEnd(true);
    return item;
  }
  function scrollToEnd(force) {
    const nearEnd = transcript.scrollHeight - transcript.scrollTop - transcript.clientHeight < 80;
    if (force || nearEnd) transcript.scrollTop = transcript.scrollHeight;
  }
  function showNotice(text) {
    notice.textContent = text;
    notice.hidden = !text;
  }
  function setStatus(text) { status.textContent = text; }
  function showHistory() {
    const of = state.sessionLen ? " of " + state.sessionLen : "";
    $("history").textContent = state.history + of + " tokens";
    document.body.dataset.historyTokens = String(state.history);
  }
  function setRunning(turn) {
    state.running = turn;
    send.disabled = !!turn;
    cancelButton.disabled = !turn;
    transcript.setAttribute("aria-busy", turn ? "true" : "false");
    document.body.dataset.state = turn ? "answering" : "idle";
  }

  // ------------------------------------------------------------------ talking to the server
  function post(body, options) {
    return fetch("/v1/chat/interactive", Object.assign({
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    }, options || {}));
  }

  /** What an error answer means to the user. */
  async function explain(response) {
    let error = {};
    try { error = (await response.json()).error || {}; } catch (e) { error = {}; }
    const message = error.message || (response.status + " " + response.statusText);
    if (response.status === 429) {
      const retry = response.headers.get("Retry-After");
      return "The server is busy: " + message + (retry ? " (retry in " + retry + " s)." : ".");
    }
    if (error.code === "context_length_exceeded") {
      return "The conversation is full: " + message + ". Press Reset to start a new conversation.";
    }
    if (response.status === 401) return "The api_server refused the request: " + message + " (serve gradio's --api-key).";
    if (response.status === 502) return "The api_server cannot be reached: " + message;
    if (response.status === 503) return "The server cannot start this answer now: " + message;
    return "The server answered " + response.status + ": " + message;
  }

  async function ask(text, pressedAt) {
    const settings = readSettings();
    if (!settings) return;
    showNotice("");
    const system = $("system").value.trim();
    // lmdeploy's list form of `prompt` carries the system prompt with a conversation's first turn.
    const turnPrompt = state.turns === 0 && system ? [{ role: "system", content: system }, { role: "user", content: text }] : text;
    prompt.value = "";
    addMessage("user", text);
    const item = addMessage("assistant", "");
    item.setAttribute("aria-busy", "true");
    const body = item.querySelector(".body");
    const meta = el("p", "meta");
    item.append(meta);
    const controller = new AbortController();
    const turn = { controller, item, reply: "", finish: null, tokens: 0, cancelRequested: false, pressedAt };
    setRunning(turn);
    setStatus("Answering…");
    announcer.textContent = "";
    let firstAt = null;
    let failed = null;
    try {
      const response = await post(Object.assign({ prompt: turnPrompt, session_id: state.sessionId, interactive_mode: true, stream: true }, settings),
                                  { signal: controller.signal });
      if (!response.ok) {
        failed = await explain(response);
      } else {
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let pending = "";
        const take = (line) => {
          if (!line.trim()) return;
          const update = JSON.parse(line);
          if (update.error) { failed = "The answer broke off: " + (update.error.message || "server error"); return; }
          if (update.text) {
            if (firstAt === null) {
              firstAt = performance.now();
              item.dataset.firstTokenMs = (firstAt - pressedAt).toFixed(1);
            }
            turn.reply += update.text;
            renderMarkdown(body, turn.reply);
            scrollToEnd(false);
          }
          turn.tokens = update.tokens;
          if (typeof update.history_tokens === "number") state.history = update.history_tokens;
          if (update.finish_reason) turn.finish = update.finish_reason;
        };
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          pending += decoder.decode(value, { stream: true });
          let nl;
          while ((nl = pending.indexOf("\n")) >= 0) {
            take(pending.slice(0, nl));
            pending = pending.slice(nl + 1);
          }
        }
        take(pending + decoder.decode());
      }
    } catch (e) {
      if (e.name === "AbortError") {
        turn.finish = turn.finish || "cancelled";
      } else if (e instanceof SyntaxError) {
        failed = "The server sent something that is not an interactive answer.";
      } else {
        failed = "Cannot reach the server (" + e.message + "): it may have stopped.";
      }
    }
    finishTurn(turn, text, failed, firstAt);
  }

  function finishTurn(turn, text, failed, firstAt) {
    const item = turn.item;
    item.removeAttribute("aria-busy");
    item.dataset.raw = turn.reply;
    item.dataset.finish = turn.finish || (failed ? "error" : "");
    item.dataset.tokens = String(turn.tokens);
    item.dataset.historyTokens = String(state.history);
    // The server keeps a turn unless it was cancelled before any text (InteractiveRoute's rule).
    if (!failed && turn.finish && !(turn.reply === "" && turn.finish === "cancelled")) state.turns += 1;
    if (failed && turn.reply === "") {
      // Nothing was answered: the message goes back into the box to send again.
      item.previousElementSibling.remove();
      item.remove();
      if (!prompt.value) prompt.value = text;
      $("empty").hidden = transcript.children.length > 0;
    }
    const parts = [turn.tokens + (turn.tokens === 1 ? " token" : " tokens")];
    if (firstAt !== null) {
      parts.push("first token " + Math.round(firstAt - turn.pressedAt) + " ms");
      const seconds = (performance.now() - firstAt) / 1000;
      if (turn.tokens > 1 && seconds > 0) parts.push((turn.tokens / seconds).toFixed(1) + " tokens/s");
    }
    if (turn.finish === "length") parts.push("stopped at max new tokens");
    if (turn.finish === "cancelled") parts.push("cancelled");
    const meta = item.querySelector(".meta");
    if (meta) meta.textContent = parts.join(" · ");
    showHistory();
    setRunning(null);
    if (failed) {
      showNotice(failed);
      setStatus("");
    } else if (turn.finish === "session_full") {
      showNotice("The conversation is full: it reached the session length" + (state.sessionLen ? " (" + state.sessionLen + " tokens)" : "") +
                 ". Press Reset to start a new conversation.");
      setStatus("");
    } else {
      setStatus(turn.finish === "cancelled" ? "Answer cancelled." : "Ready.");
    }
    announcer.textContent = failed ? "" : "Assistant: " + (turn.reply || "(no text)") + (turn.finish === "cancelled" ? " (cancelled)" : "");
  }

  /** Stops the running answer: `stop` for the session (the server keeps what was produced), and
      the connection closed if the stream has not ended a few seconds later. */
  function cancel() {
    const turn = state.running;
    if (!turn || turn.cancelRequested) return Promise.resolve();
    turn.cancelRequested = true;
    setStatus("Cancelling…");
    const stopped = new Promise((resolve) => {
      const check = setInterval(() => { if (state.running !== turn) { clearInterval(check); resolve(); } }, 25);
      setTimeout(() => { if (state.running === turn) turn.controller.abort(); }, 3000);
    });
    post({ session_id: state.sessionId, stop: true, interactive_mode: true }).catch(() => turn.controller.abort());
    return stopped;
  }

  /** Ends the session on the server (history and KV cache freed) and clears the transcript. */
  async function reset() {
    resetButton.disabled = true;
    try {
      await cancel();
      const response = await post({ session_id: state.sessionId, interactive_mode: false, prompt: "", request_output_len: 0 });
      if (!response.ok) { showNotice(await explain(response)); return; }
      transcript.replaceChildren();
      $("empty").hidden = false;
      state.turns = 0;
      state.history = 0;
      showHistory();
      showNotice("");
      setStatus("New conversation.");
      announcer.textContent = "Conversation cleared.";
      document.body.dataset.resets = String(Number(document.body.dataset.resets || 0) + 1);
    } catch (e) {
      showNotice("Cannot reach the server (" + e.message + "): the conversation was not reset.");
    } finally {
      resetButton.disabled = false;
      prompt.focus();
    }
  }

  function submit(pressedAt) {
    const text = prompt.value;
    if (!text.trim()) { setStatus("Type a message first."); return; }
    if (state.running) { setStatus("Wait for the answer, or press Cancel (Esc)."); return; }
    ask(text, pressedAt);
  }

  // ------------------------------------------------------------------ wiring
  prompt.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      submit(performance.now());
    }
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && state.running) { e.preventDefault(); cancel(); }
  });
  $("composer").addEventListener("submit", (e) => { e.preventDefault(); submit(performance.now()); });
  cancelButton.addEventListener("click", () => cancel());
  resetButton.addEventListener("click", () => reset());
  for (const id of [...Object.keys(numeric), "system"]) {
    $(id).addEventListener("input", () => {
      showOutputs();
      saveSettings();
      if (id === "system") $("system-help").textContent = state.turns > 0
        ? "Applies after Reset: this conversation already started."
        : "Sent with the first message of a conversation; a change applies after Reset.";
    });
  }
  // A closed tab ends its session, so its KV cache does not wait for eviction.
  window.addEventListener("pagehide", () => {
    if (state.turns > 0 || state.running) {
      post({ session_id: state.sessionId, interactive_mode: false, prompt: "", request_output_len: 0 }, { keepalive: true }).catch(() => {});
    }
  });

  loadSettings();
  showOutputs();
  showHistory();
  if (window.matchMedia("(max-width: 40rem)").matches) $("settings").open = false;
  fetch("/webui/info").then((r) => r.json()).then((info) => {
    $("model").textContent = info.model;
    $("backend").textContent = info.mode === "restful" ? "via api_server " + info.backend : "on " + info.backend;
    document.title = info.model + " · lmdeploy-swift chat";
    state.sessionLen = info.session_len;
    if (state.sessionLen) $("max-new-tokens").max = String(state.sessionLen);
    showHistory();
    document.body.dataset.ready = "true";
  }).catch((e) => showNotice("Cannot reach the server (" + e.message + ")."));
  prompt.focus();
})();
