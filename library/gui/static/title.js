// The tab's title follows a run: "42% · quickstart — Furnace", so progress shows from another tab. A run page
// titles its own run (runs.js); every other view the run that is training.
"use strict";
const TITLE = "Furnace";
const TITLE_PERIOD_MS = 5000;

function progressTitle(run) {
  if (!run) return TITLE;
  const { step, total_steps: total } = run.progress || {};
  const done = run.status === "running" && total ? `${Math.floor(100 * (step || 0) / total)}%` : run.status;
  return `${done} · ${run.name} — ${TITLE}`;
}

async function refreshTitle() {
  if (location.hash.startsWith("#run/")) return;
  try {
    const runs = await api("runs");
    document.title = progressTitle(runs.find(run => run.status === "running"));
  } catch { document.title = TITLE; }
}

window.addEventListener("DOMContentLoaded", () => {
  refreshTitle();
  setInterval(refreshTitle, TITLE_PERIOD_MS);
});
