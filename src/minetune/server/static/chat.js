// minetune chat: conversations (search, rename, delete, branches), streamed answers rendered as
// Markdown, stop, edit-and-resend, stars (keys 1-5), critiques, retries (key r), "why this answer",
// and a notice when background learning finishes.
// Plain DOM code. Every text from the server is set with textContent; the only HTML parsed is an
// answer's `html`, which the server rendered from Markdown and sanitised (server/markdown.py).
(() => {
  "use strict";
  const root = document.getElementById("chat");
  if (!root) return;
  const { api, errorMessage } = window.minetune; // from api.js
  const program = root.dataset.program;
  let conversationId = root.dataset.conversation ? Number(root.dataset.conversation) : null;
  let rootId = root.dataset.root ? Number(root.dataset.root) : conversationId; // what the list shows
  const messages = document.getElementById("messages");
  const composer = document.getElementById("composer");
  const input = document.getElementById("message");
  const sendButton = document.getElementById("send");
  const errorBox = document.getElementById("chat-error");
  const stopButton = document.getElementById("stop");
  const learnNotice = document.getElementById("learn-notice");
  let busy = false;
  let streamToken = null; // the stop token of the answer streaming now
  let learned = null; // the program's learning status last seen (version, rules)

  // -- helpers ----------------------------------------------------------------------------------

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function showError(message) {
    errorBox.textContent = message || "";
    errorBox.hidden = !message;
  }

  // POST and read an NDJSON stream (fetch + ReadableStream), calling onEvent per line.
  async function stream(url, body, onEvent) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/x-ndjson" },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (line) onEvent(JSON.parse(line));
      }
    }
    if (buffer.trim()) onEvent(JSON.parse(buffer));
  }

  // Set a node's content to server-sanitised answer HTML and give each code block a copy button.
  function setAnswerHtml(node, html) {
    node.innerHTML = html;
    for (const pre of node.querySelectorAll("pre")) {
      const wrap = el("div", { class: "code-block" });
      pre.replaceWith(wrap);
      wrap.append(copyButton(() => pre.innerText, "Copy code", "copy-code"), pre);
    }
  }

  function copyButton(getText, label, cls) {
    const button = el("button", { type: "button", class: `copy ${cls}`, text: label, title: label });
    button.addEventListener("click", async () => {
      const text = getText();
      try {
        await navigator.clipboard.writeText(text);
      } catch (_) { // no clipboard permission (plain http): select-and-copy fallback
        const area = el("textarea", { class: "sr-only", "aria-hidden": "true" });
        area.value = text;
        document.body.append(area);
        area.select();
        document.execCommand("copy");
        area.remove();
      }
      button.textContent = "Copied";
      button.dataset.copied = text;
      setTimeout(() => { button.textContent = label; }, 1500);
    });
    return button;
  }

  function starsText(stars) {
    return stars ? "★".repeat(stars) + "☆".repeat(5 - stars) : "unrated";
  }

  // -- rendering --------------------------------------------------------------------------------

  function renderTurn(turn) {
    const article = el("article", { class: "turn", "data-turn-id": turn.id, id: `turn-${turn.id}` },
      el("div", { class: "attempts" }));
    article.prepend(userMessage(article, turn));
    updateTurn(article, turn);
    return article;
  }

  // The user's message with its branch switcher and an Edit button.
  function userMessage(article, turn) {
    const meta = el("div", { class: "meta" }, el("span", { class: "who", text: "You" }));
    if (turn.branch) meta.append(renderSwitcher(turn.branch));
    meta.append(el("button", { type: "button", class: "edit-message link", text: "Edit",
      title: "Edit this message and resend it (a new branch; this one stays)", disabled: busy,
      onclick: () => editMessage(article, turn) }));
    return el("div", { class: "msg user" }, meta, el("div", { class: "text", text: turn.user_message }));
  }

  // "‹ 2/3 ›": the branches that differ at this message (links to each conversation).
  function renderSwitcher(branch) {
    const ids = branch.conversations;
    const shown = branch.shown;
    const href = (i) => `/?program=${encodeURIComponent(program)}&c=${ids[i]}`;
    const nav = el("nav", { class: "branches", "aria-label": "Versions of this message" });
    nav.append(shown > 0 ? el("a", { href: href(shown - 1), class: "prev", "aria-label": "Previous version", text: "‹" })
      : el("span", { class: "muted", "aria-hidden": "true", text: "‹" }));
    nav.append(el("span", { class: "branch-pos small", text: `${shown + 1}/${ids.length}` }));
    nav.append(shown < ids.length - 1 ? el("a", { href: href(shown + 1), class: "next", "aria-label": "Next version", text: "›" })
      : el("span", { class: "muted", "aria-hidden": "true", text: "›" }));
    return nav;
  }

  function editMessage(article, turn) {
    if (busy || article.querySelector("form.edit-form")) return;
    const userMsg = article.querySelector(".msg.user");
    const box = el("textarea", { class: "edit-box", rows: 3, "aria-label": "Edited message" });
    box.value = turn.user_message;
    const form = el("form", { class: "edit-form" }, box,
      el("div", { class: "edit-actions" },
        el("button", { type: "submit", class: "primary", text: "Send edit" }),
        el("button", { type: "button", class: "cancel-edit", text: "Cancel", onclick: () => form.remove() })));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      if (box.value.trim()) resend(article, turn, box.value);
    });
    userMsg.append(form);
    box.focus();
  }

  function updateTurn(article, turn) {
    const box = article.querySelector(".attempts");
    box.replaceChildren(...turn.attempts.map((a, i) => renderAttempt(a, i === turn.attempts.length - 1)));
    article.classList.toggle("excluded", !!turn.excluded);
  }

  function renderAttempt(attempt, latest) {
    const node = el("div", {
      class: `msg ai${latest ? " latest" : " earlier"}`,
      "data-attempt-id": attempt.id,
      "data-stars": attempt.stars || "",
      id: `attempt-${attempt.id}`,
    });
    const meta = el("div", { class: "meta" },
      el("span", { class: "who", text: attempt.user_edit ? "Your edit" : "AI" }),
      el("span", { class: "muted small", text: ` attempt ${attempt.number} · ${attempt.model}` }),
      el("span", { class: `rating${attempt.stars ? "" : " unrated"}`,
        "aria-label": attempt.stars ? `${attempt.stars} stars` : "unrated",
        text: ` ${starsText(attempt.stars)}` }));
    if (attempt.praised) meta.append(el("span", { class: "tag", text: "praised" }));
    const text = el("div", { class: "text markdown" });
    setAnswerHtml(text, attempt.html);
    meta.append(copyButton(() => attempt.text, "Copy", "copy-answer"));
    node.append(meta, text);
    if (attempt.critiques && attempt.critiques.length) {
      node.append(el("div", { class: "muted small critiques", text: `Your critique: ${attempt.critiques.join("; ")}` }));
    }
    node.append(renderFeedback(attempt, latest), renderWhy(attempt));
    return node;
  }

  function renderFeedback(attempt, latest) {
    const status = el("span", { class: "rating-status muted small", role: "status" });
    const critique = el("textarea", {
      class: "critique", rows: 2, "aria-label": "Critique",
      placeholder: latest
        ? "What should be different? (optional; sent with your rating or retry; Ctrl+Enter retries)"
        : "What should be different? (optional; sent with your rating)",
    });
    const stars = el("div", { class: "stars", role: "group", "aria-label": "Rate this answer" });
    for (let n = 1; n <= 5; n++) {
      stars.append(el("button", {
        type: "button", class: `star${attempt.stars && n <= attempt.stars ? " on" : ""}`,
        "data-stars": n, "aria-label": `${n} star${n > 1 ? "s" : ""}`,
        "aria-pressed": attempt.stars === n ? "true" : "false", title: `${n}★`, text: "★",
        onclick: () => rate(attempt.id, n, critique, status),
      }));
    }
    const box = el("div", { class: "feedback" }, stars, status, critique);
    if (latest) {
      box.append(el("button", {
        type: "button", class: "retry", text: "Retry with critique",
        title: "Answer again with your ratings and critiques folded in",
        onclick: () => retry(attempt.id, critique),
      }));
    }
    critique.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && latest) {
        event.preventDefault();
        retry(attempt.id, critique);
      }
    });
    return box;
  }

  function renderWhy(attempt) {
    const body = el("div", { class: "why-body", text: "Loading…" });
    const details = el("details", { class: "why" }, el("summary", { text: "Why this answer" }), body);
    details.addEventListener("toggle", async () => {
      if (!details.open || details.dataset.loaded) return;
      try {
        fillWhy(body, await api("GET", `/api/attempts/${attempt.id}/why`));
        details.dataset.loaded = "1";
      } catch (error) {
        body.textContent = error.message;
      }
    });
    return details;
  }

  function fillWhy(body, why) {
    const parts = [];
    const v = why.version;
    parts.push(el("p", {},
      el("strong", { text: "Version: " }),
      document.createTextNode(v ? `v${v.number}${v.note ? ` (${v.note})` : ""}` : "unknown (deleted)")));
    parts.push(el("p", {}, el("strong", { text: "Model: " }), el("code", { text: why.model })));
    if (why.adapter) {
      const a = why.adapter;
      parts.push(el("p", {}, el("strong", { text: "Adapter: " }), document.createTextNode(
        `#${a.id} ${a.domain} (${a.method})${a.tainted ? " — tainted: it learned from forgotten data" : ""}`)));
    } else {
      parts.push(el("p", {}, el("strong", { text: "Adapter: " }), document.createTextNode("none (base model)")));
    }
    if (why.active_adapter && (!why.adapter || why.active_adapter.id !== why.adapter.id)) {
      parts.push(el("p", { class: "muted small", text: `The program now serves adapter #${why.active_adapter.id}.` }));
    }
    parts.push(el("p", {}, el("strong", { text: `Rules (${why.rules.length}): ` }),
      why.rules.length ? null : document.createTextNode("none yet")));
    if (why.rules.length) parts.push(el("ul", { class: "why-rules" }, ...why.rules.map((r) => el("li", { text: r }))));
    parts.push(el("p", {}, el("strong", { text: `Demos (${why.demos.length}): ` }),
      why.demos.length ? null : document.createTextNode("none (no similar accepted answer yet)")));
    if (why.demos.length) {
      parts.push(el("ul", { class: "why-demos" }, ...why.demos.map((d) => el("li", {
        text: d.forgotten ? `answer #${d.attempt_id} (forgotten since)`
          : `${d.stars ? `${d.stars}★ ` : ""}“${d.user}” → “${d.response.slice(0, 200)}”`,
      }))));
    }
    parts.push(el("p", { class: "muted small", text: `Demos come from ${why.demos_source}.` }));
    const tokens = why.prompt_tokens !== null || why.completion_tokens !== null
      ? `${why.prompt_tokens ?? "?"} prompt + ${why.completion_tokens ?? "?"} completion tokens`
      : "token counts not reported";
    parts.push(el("p", { class: "muted small", text: `${tokens} · ${Math.round(why.latency_ms)} ms` }));
    if (why.critique_used) parts.push(el("p", { class: "small", text: `Critique folded in: ${why.critique_used}` }));
    parts.push(el("details", {}, el("summary", { text: "System prompt sent" }), el("pre", { text: why.system_prompt || "(none)" })));
    body.replaceChildren(...parts);
  }

  // -- actions ----------------------------------------------------------------------------------

  function setBusy(value) {
    busy = value;
    sendButton.disabled = value || input.disabled;
    root.classList.toggle("busy", value);
    for (const button of messages.querySelectorAll("button.retry, button.edit-message")) button.disabled = value;
    stopButton.hidden = !value;
    stopButton.disabled = !value;
    if (!value) streamToken = null;
  }

  // A streamed event into the pending answer: the server's rendered snapshot when it sent one,
  // else the raw delta appended as text until the next snapshot.
  function onDelta(target, event) {
    if (event.html !== undefined) setAnswerHtml(target, event.html);
    else target.append(document.createTextNode(event.text));
  }

  async function stopAnswer() {
    if (!streamToken) return;
    stopButton.disabled = true;
    try {
      await api("POST", `/api/streams/${encodeURIComponent(streamToken)}/stop`);
    } catch (error) {
      showError(error.message);
    }
  }

  function pendingAnswer(article) {
    const text = el("div", { class: "text markdown streaming" });
    const node = el("div", { class: "msg ai pending" },
      el("div", { class: "meta" }, el("span", { class: "who", text: "AI" }),
        el("span", { class: "muted small", text: " writing…" })), text);
    article.querySelector(".attempts").append(node);
    return text;
  }

  function applyDone(article, event) {
    article.dataset.turnId = event.turn.id;
    article.id = `turn-${event.turn.id}`;
    if (!article.querySelector("button.edit-message")) {
      article.querySelector(".msg.user").replaceWith(userMessage(article, event.turn));
    }
    updateTurn(article, event.turn);
    if (event.praise) {
      const praised = event.praise.attempt;
      const old = document.getElementById(`turn-${praised.turn_id}`);
      const note = praised.stars === 5 && !praised.rated_explicitly
        ? `You said “${event.praise.phrase}”: the previous answer was marked 5★ and captured.`
        : `You said “${event.praise.phrase}”: praise noted on the previous answer (your own ${praised.stars}★ rating stays).`;
      if (old) {
        const previous = old.querySelector(`[data-attempt-id="${praised.id}"]`);
        if (previous) previous.replaceWith(renderAttempt(praised, previous.classList.contains("latest")));
      }
      article.before(el("p", { class: "praise-note ok", role: "status", text: note }));
    }
  }

  async function send(message) {
    showError("");
    setBusy(true);
    document.getElementById("empty-thread")?.remove();
    const article = el("article", { class: "turn" },
      el("div", { class: "msg user" }, el("div", { class: "who", text: "You" }), el("div", { class: "text", text: message })),
      el("div", { class: "attempts" }));
    messages.append(article);
    const target = pendingAnswer(article);
    article.scrollIntoView({ block: "end" });
    try {
      await stream("/api/chat", { program, conversation_id: conversationId, message }, (event) => {
        if (event.type === "start") streamToken = event.stream;
        else if (event.type === "delta") onDelta(target, event);
        else if (event.type === "error") throw new Error(event.message);
        else if (event.type === "done") {
          const isNew = conversationId === null;
          conversationId = event.conversation_id;
          applyDone(article, event);
          if (isNew) addConversation(conversationId, message);
        }
      });
      input.value = "";
      showHeader();
    } catch (error) {
      article.remove();
      showError(error.message);
    } finally {
      setBusy(false);
      input.focus();
    }
  }

  async function rate(attemptId, stars, critiqueBox, status) {
    showError("");
    const critique = critiqueBox.value.trim();
    try {
      const result = await api("POST", `/api/attempts/${attemptId}/rate`, { stars, critique: critique || null });
      const node = document.getElementById(`attempt-${attemptId}`);
      const fresh = renderAttempt(result.attempt, node.classList.contains("latest"));
      node.replaceWith(fresh);
      const learning = result.learning === "queued" ? " · learning from it in the background" : "";
      fresh.querySelector(".rating-status").textContent = `Rated ${result.stars}★${learning}`;
      fresh.querySelector(`.star[data-stars="${result.stars}"]`).focus();
      if (result.learning === "queued") watchLearning();
    } catch (error) {
      (status || errorBox).textContent = error.message;
      showError(error.message);
    }
  }

  async function retry(attemptId, critiqueBox) {
    if (busy) return;
    showError("");
    const node = document.getElementById(`attempt-${attemptId}`);
    const article = node.closest("article.turn");
    const critique = critiqueBox.value.trim();
    setBusy(true);
    const target = pendingAnswer(article);
    try {
      await stream(`/api/attempts/${attemptId}/retry`, { critique: critique || null }, (event) => {
        if (event.type === "start") streamToken = event.stream;
        else if (event.type === "delta") onDelta(target, event);
        else if (event.type === "error") throw new Error(event.message);
        else if (event.type === "done") applyDone(article, event);
      });
    } catch (error) {
      target.closest(".msg")?.remove();
      showError(error.message);
    } finally {
      setBusy(false);
      article.querySelector(".msg.ai.latest .star")?.focus();
      if (critique) watchLearning();
    }
  }

  // Edit and resend: the edited message goes to a new branch; the page then shows that branch.
  async function resend(article, turn, message) {
    if (busy) return;
    showError("");
    setBusy(true);
    const fresh = el("article", { class: "turn" },
      el("div", { class: "msg user" }, el("div", { class: "who", text: "You" }), el("div", { class: "text", text: message })),
      el("div", { class: "attempts" }));
    while (article.nextElementSibling) article.nextElementSibling.remove();
    article.replaceWith(fresh);
    const target = pendingAnswer(fresh);
    try {
      await stream("/api/chat", { program, edit_of: turn.id, message }, (event) => {
        if (event.type === "start") streamToken = event.stream;
        else if (event.type === "delta") onDelta(target, event);
        else if (event.type === "error") throw new Error(event.message);
        else if (event.type === "done") conversationId = event.conversation_id;
      });
    } catch (error) {
      showError(error.message);
    } finally {
      setBusy(false);
    }
    history.replaceState(null, "", `/?program=${encodeURIComponent(program)}&c=${conversationId}`);
    await loadConversation(conversationId);
  }

  // -- the learning notice ----------------------------------------------------------------------

  async function learningStatus() {
    return api("GET", `/api/programs/${encodeURIComponent(program)}/learning`);
  }

  let watching = false;
  async function watchLearning() {
    if (watching) return;
    watching = true;
    try {
      const before = learned || await learningStatus();
      for (let i = 0; i < 120; i++) { // up to about a minute
        await new Promise((resolve) => setTimeout(resolve, 500));
        const now = await learningStatus();
        if (now.learning) continue;
        learned = now;
        if (now.version !== before.version) {
          const what = now.rules > before.rules ? (now.rules - before.rules === 1 ? "learned a rule"
            : `learned ${now.rules - before.rules} rules`) : "learned from your feedback";
          learnNotice.textContent = `${what} · now v${now.version}`;
          learnNotice.hidden = false;
        }
        return;
      }
    } catch (_) { /* the notice is a nicety: no error box for it */ } finally {
      watching = false;
    }
  }

  // -- conversations: header, search, rename, delete ---------------------------------------------

  const header = document.getElementById("thread-header");
  const titleNode = document.getElementById("thread-title");

  function showHeader(title) {
    if (!header) return;
    header.hidden = conversationId === null;
    if (title !== undefined) titleNode.textContent = title || "(untitled)";
    else if (conversationId !== null && !titleNode.textContent) {
      titleNode.textContent = document.querySelector("#conversations a.active .title")?.textContent || "";
    }
  }

  function renderConversationItem(conv) {
    const href = `/?program=${encodeURIComponent(program)}&c=${conv.id}`;
    const active = conv.id === rootId;
    return el("li", {}, el("a", { href, class: active ? "active" : null, "aria-current": active ? "page" : null,
      "data-conversation-id": conv.id },
      el("span", { class: "title", text: conv.title || "(untitled)" }),
      conv.turns === undefined ? null
        : el("span", { class: "muted small", text: `${conv.turns} message${conv.turns === 1 ? "" : "s"}` })));
  }

  let searchTimer = null;
  async function search(query) {
    try {
      const data = await api("GET", `/api/conversations?program=${encodeURIComponent(program)}&q=${encodeURIComponent(query)}`);
      const list = document.getElementById("conversations");
      list.replaceChildren(...data.conversations.map(renderConversationItem));
      if (!data.conversations.length) {
        list.append(el("li", { class: "muted small", id: "no-conversations",
          text: query ? "No conversation matches." : "No conversations yet." }));
      }
    } catch (error) {
      showError(error.message);
    }
  }

  function startRename() {
    const form = document.getElementById("rename-form");
    const field = document.getElementById("rename-title");
    field.value = titleNode.textContent;
    form.hidden = false;
    field.focus();
    field.select();
  }

  async function rename(event) {
    event.preventDefault();
    const form = document.getElementById("rename-form");
    const title = document.getElementById("rename-title").value;
    try {
      const result = await api("POST", `/api/conversations/${rootId}/rename`, { title });
      form.hidden = true;
      showHeader(result.title);
      const link = document.querySelector(`#conversations a[data-conversation-id="${rootId}"] .title`);
      if (link) link.textContent = result.title;
    } catch (error) {
      showError(error.message);
    }
  }

  async function removeConversation() {
    if (!window.confirm("Delete this conversation and its branches? Its messages, answers and ratings are forgotten everywhere (rules and demos learned from them too).")) return;
    try {
      await api("DELETE", `/api/conversations/${rootId}`);
      window.location.href = `/?program=${encodeURIComponent(program)}`;
    } catch (error) {
      showError(error.message);
    }
  }

  function addConversation(id, title) {
    document.getElementById("no-conversations")?.remove();
    const list = document.getElementById("conversations");
    for (const link of list.querySelectorAll("a.active")) {
      link.classList.remove("active");
      link.removeAttribute("aria-current");
    }
    rootId = id;
    root.dataset.root = id;
    const short = title.split("\n")[0].slice(0, 80);
    list.prepend(renderConversationItem({ id, title: short }));
    showHeader(short);
    history.replaceState(null, "", `/?program=${encodeURIComponent(program)}&c=${id}`);
  }

  async function loadConversation(id) {
    try {
      const data = await api("GET", `/api/conversations/${id}`);
      rootId = data.conversation.root_id;
      root.dataset.root = rootId;
      messages.replaceChildren(...data.turns.map(renderTurn));
      messages.lastElementChild?.scrollIntoView({ block: "end" });
      showHeader(data.conversation.title);
    } catch (error) {
      showError(error.message);
    }
  }

  // Keyboard: 1-5 rate the latest answer, r retries it (not while typing in a field).
  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
    const target = event.target;
    if (target instanceof HTMLElement && (target.isContentEditable || target.closest("input, textarea, select"))) return;
    const latest = [...messages.querySelectorAll(".msg.ai.latest[data-attempt-id]")].pop();
    if (!latest) return;
    if (/^[1-5]$/.test(event.key)) {
      event.preventDefault();
      latest.querySelector(`.star[data-stars="${event.key}"]`)?.click();
    } else if (event.key === "r" || event.key === "R") {
      const retryButton = latest.querySelector("button.retry");
      if (retryButton && !retryButton.disabled) {
        event.preventDefault();
        retryButton.click();
      }
    }
  }

  // -- wiring -----------------------------------------------------------------------------------

  composer.addEventListener("submit", (event) => {
    event.preventDefault();
    const message = input.value;
    if (!busy && message.trim()) send(message);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      composer.requestSubmit();
    }
  });
  document.getElementById("program-select")?.addEventListener("change", (event) => {
    window.location.href = `/?program=${encodeURIComponent(event.target.value)}`;
  });
  stopButton.addEventListener("click", stopAnswer);
  document.addEventListener("keydown", onKey);
  document.getElementById("search")?.addEventListener("input", (event) => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => search(event.target.value), 200);
  });
  document.getElementById("rename")?.addEventListener("click", startRename);
  document.getElementById("rename-form")?.addEventListener("submit", rename);
  document.getElementById("rename-cancel")?.addEventListener("click", () => {
    document.getElementById("rename-form").hidden = true;
  });
  document.getElementById("delete")?.addEventListener("click", removeConversation);

  learningStatus().then((status) => { learned = status; }).catch(() => {});
  if (conversationId !== null) loadConversation(conversationId);
  if (!input.disabled) input.focus();
})();
