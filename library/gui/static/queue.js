// The queue on the runs page: running runs with progress and ETA, queued runs in start order with their position;
// a queued run can be moved up or down, or cancelled. The order is the server's (kept in each run's run.json).
"use strict";
let queueTimer = null;

function queueEta(entry) {
  if (entry.status === "running") return entry.eta_seconds != null ? formatEta(entry.eta_seconds) : "-";
  if (entry.starts_in_seconds === 0) return "starting";
  return entry.starts_in_seconds != null ? `starts in ≈ ${formatEta(entry.starts_in_seconds)}` : "after the runs ahead";
}

function queueButton(label, text, action, disabled = false) {
  const button = el("button", { type: "button", "aria-label": label, title: label, text });
  button.disabled = disabled;
  button.addEventListener("click", async () => {
    try { await action(); } catch (error) { document.getElementById("queue-message").textContent = error.message; }
    await refreshQueue();
    refreshRuns();
  });
  return button;
}

function queueRow(entry, queuedCount) {
  const path = `runs/${encodeURIComponent(entry.id)}`;
  const cells = [
    el("td", { class: "queue-position", text: entry.status === "queued" ? entry.position : "▶" }),
    el("td", {}, el("a", { href: "#run/" + encodeURIComponent(entry.id), text: entry.id })),
    el("td", { class: "queue-status", text: entry.status }),
    el("td", { class: "queue-progress" }),
    el("td", { class: "queue-eta", text: queueEta(entry) }),
    el("td", { class: "queue-actions" }),
  ];
  if (entry.status === "running") {   // before its first step a run has no progress to show yet
    cells[3].append(...(entry.step == null ? ["starting"] : [
      el("progress", { max: entry.total_steps || 1, value: entry.step, "aria-label": `progress of ${entry.id}` }),
      ` ${entry.step} / ${entry.total_steps}`]));
  }
  if (entry.status === "queued") {
    cells[5].append(
      queueButton(`Move ${entry.id} up`, "↑", () => api(`${path}/move`, { direction: "up" }), entry.position === 1),
      queueButton(`Move ${entry.id} down`, "↓", () => api(`${path}/move`, { direction: "down" }),
                  entry.position === queuedCount),
      queueButton(`Cancel ${entry.id}`, "Cancel", () => api(`${path}/stop`, {})));
  }
  return el("tr", { "data-run": entry.id }, ...cells);
}

// Rows are rebuilt only when their content changed, so a click on a button is not lost to a redraw.
async function refreshQueue() {
  const { entries } = await api("queue");
  titleFromQueue(entries);
  const queued = entries.filter(entry => entry.status === "queued").length;
  const body = document.querySelector("#queue-table tbody");
  const rows = new Map([...body.rows].map(row => [row.dataset.run, row]));
  body.replaceChildren(...entries.map(entry => {
    const content = JSON.stringify([entry, queued]), kept = rows.get(entry.id);
    if (kept?.dataset.content === content) return kept;
    const row = queueRow(entry, queued);
    row.dataset.content = content;
    return row;
  }));
  document.getElementById("queue-table").hidden = !entries.length;
  document.getElementById("queue-empty").hidden = entries.length > 0;
}

// Polled every 2 s while the runs page is shown.
function followQueue(on) {
  if (on && !queueTimer) {
    queueTimer = setInterval(() => refreshQueue().catch(error => {
      document.getElementById("queue-message").textContent = error.message;
    }), 2000);
  }
  if (!on && queueTimer) { clearInterval(queueTimer); queueTimer = null; }
  if (on) refreshQueue();
}

window.addEventListener("hashchange", () => followQueue(location.hash === "#runs"));
window.addEventListener("DOMContentLoaded", () => followQueue(location.hash === "#runs"));
