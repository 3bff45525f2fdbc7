// minetune dataset review: edit an answer, exclude / include a turn, forget a turn.
(() => {
  "use strict";
  const table = document.getElementById("dataset");
  const errorBox = document.getElementById("dataset-error");
  if (!table) return;
  const { api } = window.minetune; // from api.js

  function showError(message) {
    errorBox.textContent = message || "";
    errorBox.hidden = !message;
  }

  const actions = {
    async edit(row, id) {
      const text = row.querySelector("textarea").value;
      await api("POST", `/api/turns/${id}/edit`, { text });
      window.location.reload();
    },
    async exclude(row, id) {
      await api("POST", `/api/turns/${id}/exclude`, { excluded: true });
      window.location.reload();
    },
    async include(row, id) {
      await api("POST", `/api/turns/${id}/exclude`, { excluded: false });
      window.location.reload();
    },
    async forget(row, id) {
      const message = row.querySelector(".message-cell .pre").textContent.slice(0, 80);
      if (!window.confirm(`Forget turn ${id} (“${message}”) and everything learned from it? This cannot be undone.`)) return;
      await api("DELETE", `/api/turns/${id}`);
      row.remove();
      if (!table.querySelector("tbody tr")) table.replaceWith(Object.assign(document.createElement("p"),
        { className: "card muted", id: "no-turns", textContent: "No turns." }));
    },
  };

  table.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const row = button.closest("tr[data-turn-id]");
    showError("");
    button.disabled = true;
    try {
      await actions[button.dataset.action](row, Number(row.dataset.turnId));
    } catch (error) {
      showError(error.message);
    } finally {
      button.disabled = false;
    }
  });
})();
