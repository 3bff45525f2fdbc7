// minetune chat: conversations, streamed answers, stars, critiques, retries, "why this answer".
// Plain DOM code; every text from the server is set with textContent (never parsed as HTML).
(() => {
  "use strict";
  const root = document.getElementById("chat");
  if (!root) return;
  const { api, errorMessage } = window.minetune; // from api.js
  const program = root.dataset.program;
  let conversationId = root.dataset.conversation ? Number(root.dataset.conversation) : null;
  const messages = document.getElementById("messages");
  const composer = document.getElementById("composer");
  const input = document.getElementById("message");
  const sendButton = document.getElementById("send");
  const errorBox = document.getElementById("chat-error");
  let busy = false;

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

  function starsText(stars) {
    return stars ? "★".repeat(stars) + "☆".repeat(5 - stars) : "unrated";
  }

  // -- rendering --------------------------------------------------------------------------------

  function renderTurn(turn) {
    const article = el("article", { class: "turn", "data-turn-id": turn.id, id: `turn-${turn.id}` },
      el("div", { class: "msg user" }, el("div", { class: "who", text: "You" }),
        el("div", { class: "text", text: turn.user_message })),
      el("div", { class: "attempts" }));
    updateTurn(article, turn);
    return article;
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
    node.append(meta, el("div", { class: "text", text: attempt.text }));
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
    for (const button of messages.querySelectorAll("button.retry")) button.disabled = value;
  }

  function pendingAnswer(article) {
    const text = el("div", { class: "text streaming" });
    const node = el("div", { class: "msg ai pending" },
      el("div", { class: "meta" }, el("span", { class: "who", text: "AI" }),
        el("span", { class: "muted small", text: " writing…" })), text);
    article.querySelector(".attempts").append(node);
    return text;
  }

  function applyDone(article, event) {
    article.dataset.turnId = event.turn.id;
    article.id = `turn-${event.turn.id}`;
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
        if (event.type === "delta") target.textContent += event.text;
        else if (event.type === "error") throw new Error(event.message);
        else if (event.type === "done") {
          const isNew = conversationId === null;
          conversationId = event.conversation_id;
          applyDone(article, event);
          if (isNew) addConversation(conversationId, message);
        }
      });
      input.value = "";
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
        if (event.type === "delta") target.textContent += event.text;
        else if (event.type === "error") throw new Error(event.message);
        else if (event.type === "done") applyDone(article, event);
      });
    } catch (error) {
      target.closest(".msg")?.remove();
      showError(error.message);
    } finally {
      setBusy(false);
      article.querySelector(".msg.ai.latest .star")?.focus();
    }
  }

  function addConversation(id, title) {
    document.getElementById("no-conversations")?.remove();
    const list = document.getElementById("conversations");
    for (const link of list.querySelectorAll("a.active")) link.classList.remove("active");
    const href = `/?program=${encodeURIComponent(program)}&c=${id}`;
    list.prepend(el("li", {}, el("a", { href, class: "active", "aria-current": "page", "data-conversation-id": id,
      text: title.split("\n")[0].slice(0, 80) })));
    history.replaceState(null, "", href);
  }

  async function loadConversation(id) {
    try {
      const data = await api("GET", `/api/conversations/${id}`);
      messages.replaceChildren(...data.turns.map(renderTurn));
      messages.lastElementChild?.scrollIntoView({ block: "end" });
    } catch (error) {
      showError(error.message);
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

  if (conversationId !== null) loadConversation(conversationId);
  if (!input.disabled) input.focus();
})();
