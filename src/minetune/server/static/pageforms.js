// Forms marked data-ajax post in the background: on success the page follows the returned
// redirect; on failure the error message appears next to the form. Without JavaScript the same
// forms post normally. A select marked data-autosubmit submits its form when changed.
(function () {
  "use strict";

  function errorSlot(form) {
    var slot = form.querySelector(".form-error");
    if (!slot) {
      slot = document.createElement("span");
      slot.className = "form-error error";
      slot.setAttribute("role", "alert");
      form.appendChild(slot);
    }
    return slot;
  }

  function formData(form, submitter) {
    var data = new FormData(form);
    if (submitter && submitter.name) data.append(submitter.name, submitter.value);
    return data;
  }

  async function submit(form, event) {
    event.preventDefault();
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
    var slot = errorSlot(form);
    var buttons = form.querySelectorAll("button");
    slot.textContent = form.dataset.busy || "";
    buttons.forEach(function (b) { b.disabled = true; });
    try {
      var response = await fetch(form.action, {
        method: "POST",
        body: new URLSearchParams(formData(form, event.submitter)),
        headers: { "Accept": "application/json" },
        credentials: "same-origin",
      });
      var data = await response.json().catch(function () { return {}; });
      if (!response.ok) {
        slot.textContent = (data.error && data.error.message) || ("Request failed (" + response.status + ").");
        return;
      }
      if (form.dataset.onsuccess && window[form.dataset.onsuccess]) {
        window[form.dataset.onsuccess](data, form);
        slot.textContent = "";
        return;
      }
      window.location.assign(data.redirect || window.location.href);
    } catch (err) {
      slot.textContent = "Could not reach the server: " + err;
    } finally {
      buttons.forEach(function (b) { b.disabled = false; });
    }
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form instanceof HTMLFormElement && form.hasAttribute("data-ajax")) submit(form, event);
  });
  document.addEventListener("change", function (event) {
    var el = event.target;
    if (el instanceof HTMLSelectElement && el.hasAttribute("data-autosubmit") && el.form) el.form.submit();
  });
})();
