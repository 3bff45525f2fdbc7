// Light or dark: the system's prefers-color-scheme unless the user picked one with the header's
// toggle (remembered in localStorage as minetune-theme). Loaded in <head>, so there is no flash.
(() => {
  "use strict";
  const KEY = "minetune-theme";
  const system = window.matchMedia("(prefers-color-scheme: dark)");
  const saved = () => { try { return localStorage.getItem(KEY); } catch (_) { return null; } };
  const current = () => saved() || (system.matches ? "dark" : "light");

  function apply() {
    const theme = current();
    document.documentElement.dataset.theme = theme;
    const button = document.getElementById("theme-toggle");
    if (button) button.setAttribute("aria-pressed", theme === "dark" ? "true" : "false");
  }

  apply();
  system.addEventListener("change", apply);
  document.addEventListener("DOMContentLoaded", () => {
    apply();
    document.getElementById("theme-toggle")?.addEventListener("click", () => {
      try { localStorage.setItem(KEY, current() === "dark" ? "light" : "dark"); } catch (_) { /* private mode */ }
      apply();
    });
  });
})();
