// The tab's title follows a run: "42% · quickstart — Furnace", so progress shows from another tab. A run page
// titles its own run (runs.js); every other view the run that is training, read from /api/queue (which reads the
// running runs' progress only) every few seconds, or from the queue view's own polls while it is shown (queue.js).
"use strict";
const TITLE = "Furnace";
const TITLE_PERIOD_MS = 5000;

// `run`: { name, status, step, total_steps } (a queue entry, or a run page's run and its progress).
function progressTitle(run) {
  if (!run) return TITLE;
  const { step, total_steps: total } = run;
  const done = run.status === "running" && total ? `${Math.floor(100 * (step || 0) / total)}%` : run.status;
  return `${done} · ${run.name} — ${TITLE}`;
}

function titleFromQueue(entries) {
  if (!location.hash.startsWith("#run/")) document.title = progressTitle(entries.find(e => e.status === "running"));
}

async function refreshTitle() {
  if (location.hash.startsWith("#run/") || location.hash === "#runs") return;   // those views keep it themselves
  try { titleFromQueue((await api("queue")).entries); } catch { document.title = TITLE; }
}

window.addEventListener("DOMContentLoaded", () => {
  refreshTitle();
  setInterval(refreshTitle, TITLE_PERIOD_MS);
});
