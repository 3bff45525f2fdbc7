// Live progress of a training run: polls /training/runs/<id> and redraws the server-rendered
// loss chart when new points arrive; reloads the page (job history) when the run finishes.
(function () {
  "use strict";
  var box = document.getElementById("live");
  if (!box) return;
  var timer = null;
  var lastPoints = -1;

  function text(id, value) {
    var el = document.getElementById(id);
    if (el) el.textContent = value == null ? "" : value;
  }

  async function redrawChart(runId) {
    var response = await fetch("/training/runs/" + runId + "/loss.svg", { credentials: "same-origin" });
    if (response.ok) document.getElementById("live-chart").innerHTML = await response.text();
  }

  async function poll(runId) {
    var response = await fetch("/training/runs/" + runId, {
      headers: { "Accept": "application/json" }, credentials: "same-origin",
    });
    if (!response.ok) { text("live-error", "Lost track of the run (" + response.status + ")."); return; }
    var run = await response.json();
    text("live-title", run.kind + " " + run.method.toUpperCase() + (run.job ? " · job " + run.job : ""));
    text("live-status", run.phase);
    var detail = run.total ? "step " + run.step + "/" + run.total : "";
    if (run.loss != null) detail += " · loss " + Number(run.loss).toPrecision(4);
    text("live-detail", detail + " · " + run.elapsed_s + " s");
    var bar = document.getElementById("live-progress");
    if (run.total) { bar.max = run.total; bar.value = run.step; } else { bar.removeAttribute("value"); }
    text("live-error", run.error || run.warning || "");
    if (run.points && run.points !== lastPoints) { lastPoints = run.points; redrawChart(runId); }
    if (run.done) {
      document.getElementById("live-cancel").hidden = true;
      clearInterval(timer);
      setTimeout(function () { window.location.reload(); }, 1500);
    }
  }

  function follow(runId) {
    box.hidden = false;
    box.dataset.run = runId;
    document.getElementById("live-cancel").action = "/training/runs/" + runId + "/cancel";
    document.getElementById("live-cancel").hidden = false;
    lastPoints = -1;
    clearInterval(timer);
    poll(runId);
    timer = setInterval(function () { poll(runId); }, 1500);
  }

  window.trainingStarted = function (data) { follow(data.run); };
  window.trainingCancelled = function () { text("live-status", "cancelling"); };
  if (box.dataset.run) follow(box.dataset.run);
})();
