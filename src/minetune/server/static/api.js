// JSON calls to minetune's API, shared by the page scripts (load it before them):
// minetune.api(method, url, body) resolves to the reply's JSON, or throws an Error with the
// server's message; minetune.errorMessage(response) reads that message from an error reply.
(() => {
  "use strict";

  async function errorMessage(response) {
    let data = {};
    try { data = await response.json(); } catch (_) { /* not JSON */ }
    return (data.error && data.error.message) || `${response.status} ${response.statusText}`;
  }

  async function api(method, url, body) {
    const response = await fetch(url, {
      method,
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    return response.json().catch(() => ({}));
  }

  window.minetune = Object.assign(window.minetune || {}, { api, errorMessage });
})();
