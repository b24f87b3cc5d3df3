// The runs list and one run's page: live progress, loss chart, class images, gallery, files, log, stop / resume.
"use strict";
let current = null;   // { id, next, timer, files, pictures }
let chart = null, logView = null;   // the run page's loss chart (chart.js) and log (logview.js), made when first shown
const ACTIVE = ["queued", "running"];   // a run in any other state changes no more: its page stops polling

async function refreshRuns() {
  const runs = await api("runs");
  const body = document.querySelector("#runs-table tbody");
  body.replaceChildren(...runs.slice().reverse().map(run => el("tr", { "data-run": run.id },
    el("td", {}, el("a", { href: "#run/" + encodeURIComponent(run.id), text: run.id })),
    el("td", { class: "run-trainer", text: run.trainer }),
    el("td", { class: "run-status", text: run.status }),
    el("td", { text: run.progress.step ?? "-" }),
    el("td", { text: run.progress.smoothed_loss?.toFixed(4) ?? "-" }),
    el("td", { text: run.message || "" }))));
}

function fileUrl(id, path) {
  return withToken(`/api/runs/${encodeURIComponent(id)}/file?path=${encodeURIComponent(path)}`);
}

function formatLr(lr) {
  if (typeof lr === "number") return lr.toExponential(2);
  if (!lr) return "-";
  return Object.entries(lr).map(([group, value]) => `${group.replace(/^lr\//, "")} ${value.toExponential(2)}`).join(", ");
}

function formatEta(seconds) {
  if (seconds === undefined || seconds === null) return "-";
  const s = Math.round(seconds);
  return s >= 60 ? `${Math.floor(s / 60)}m ${s % 60}s` : `${s}s`;
}

async function pollRun() {
  const { id } = current;
  const run = await api(`runs/${encodeURIComponent(id)}`);
  const { events, next } = await api(`runs/${encodeURIComponent(id)}/events?after=${current.next}`);
  if (current?.id !== id) return;
  current.next = next;
  chart.add(events);
  const p = run.progress;
  document.getElementById("run-status").textContent = run.status;
  document.getElementById("run-trainer").textContent = run.trainer;
  document.getElementById("run-trainer").title = (run.command || []).join(" ");
  document.getElementById("run-message").textContent = run.message || "";
  document.getElementById("run-step").textContent = p.step !== undefined ? `${p.step} / ${p.total_steps ?? "?"}` : "-";
  document.getElementById("run-epoch").textContent = p.epoch ?? "-";
  document.getElementById("run-loss").textContent = p.smoothed_loss?.toFixed(4) ?? "-";
  document.getElementById("run-lr").textContent = formatLr(p.lr);
  document.getElementById("run-eta").textContent = run.status === "running" ? formatEta(p.eta_seconds) : "-";
  document.title = progressTitle({ ...run.progress, name: run.name, status: run.status });
  document.getElementById("run-stop").disabled = !ACTIVE.includes(run.status);
  const resume = document.getElementById("run-resume");   // only a stopped run continues; others are never changed
  resume.disabled = run.status !== "stopped";
  resume.title = resume.disabled ? `a ${run.status} run cannot be resumed` : "continue from the saved state";
  const board = document.getElementById("run-tensorboard");
  board.hidden = !run.tensorboard; if (run.tensorboard) board.href = withToken(run.tensorboard);
  showPriorTerms(p);
  showClassImages(p.class_images);
  chart.draw();
  if (current.pictures === null || events.some(event => ["sample", "compare"].includes(event.event))) {
    const pictures = await api(`runs/${encodeURIComponent(id)}/gallery`);
    if (current?.id !== id) return;
    const shown = JSON.stringify(pictures);
    if (shown !== current.pictures) { current.pictures = shown; drawGallery(id, pictures); }
  }
  const files = await api(`runs/${encodeURIComponent(id)}/files`);
  if (current?.id !== id) return;
  const listed = JSON.stringify(files);
  if (listed !== current.files) {   // redrawn only when it changed, so a click on a link is never lost to a redraw
    current.files = listed;
    drawFiles(id, files, run.trainer);
  }
  const log = await logView.fetch(id);
  if (current?.id !== id) return;
  logView.show(log);
  current.toml = run.toml;
  current.trainer = run.trainer;
  follow(ACTIVE.includes(run.status));
}

// DreamBooth with prior preservation reports the instance and prior terms of its loss.
function showPriorTerms(progress) {
  const shown = progress.instance_loss !== undefined || progress.prior_loss !== undefined;
  for (const node of document.querySelectorAll(".prior-terms")) node.hidden = !shown;
  document.getElementById("run-instance-loss").textContent = progress.instance_loss?.toFixed(4) ?? "-";
  document.getElementById("run-prior-loss").textContent = progress.prior_loss?.toFixed(4) ?? "-";
}

// DreamBooth's class-image generation before training: a bar while it lasts, "n / n" once done.
function showClassImages(generation) {
  document.getElementById("run-class-images").hidden = !generation;
  if (!generation) return;
  const bar = document.getElementById("run-class-progress");
  bar.max = generation.total || 1; bar.value = generation.done;
  document.getElementById("run-class-text").textContent = `${generation.done} / ${generation.total}`;
}

function fileItem(id, file) {
  const link = el("a", { href: fileUrl(id, file.path), download: file.path.split("/").pop(), text: file.path });
  return el("li", {}, link, ` (${formatSize(file.size)})`);
}

function formatSize(bytes) {
  const units = ["B", "KB", "MB", "GB"];
  let size = bytes, unit = 0;
  while (size >= 1024 && unit < units.length - 1) { size /= 1024; unit += 1; }
  return unit ? `${size.toFixed(1)} ${units[unit]}` : `${bytes} B`;
}

// The trained result as a prominent download; the other files below it, the resume state (optimizer, RNG) apart.
function drawFiles(id, files, trainer) {
  const final = files.find(file => file.kind === "final");
  const download = document.getElementById("run-download");
  download.hidden = !final;
  if (final) {
    download.href = fileUrl(id, final.path);
    download.download = final.path.split("/").pop();
    download.textContent = `${trainer === "dreambooth" ? "Download the model" : "Download the LoRA"}: ` +
      `${final.path} (${formatSize(final.size)})`;
  }
  const state = files.filter(file => file.kind === "state");
  document.getElementById("run-files").replaceChildren(
    ...files.filter(file => file.kind !== "state").map(file => fileItem(id, file)));
  document.getElementById("run-state-files").replaceChildren(...state.map(file => fileItem(id, file)));
  document.getElementById("run-state").hidden = !state.length;
}

function tick() {
  pollRun().catch(error => {
    document.getElementById("run-message").textContent = error.message;
    follow(true);   // keep trying until a poll has seen the run
  });
}

// Poll once a second while the run can still change; a finished run's page is drawn once and left alone.
function follow(on) {
  if (on && !current.timer) current.timer = setInterval(() => { if (location.hash.startsWith("#run/")) tick(); }, 1000);
  if (!on && current.timer) { clearInterval(current.timer); current.timer = null; }
  document.getElementById("view-run").dataset.following = String(on);
}

function openRun(id) {
  if (current?.timer) clearInterval(current.timer);
  current = { id, next: 0, toml: "", timer: null, files: null, pictures: null };
  document.getElementById("run-title").textContent = id;
  chart ??= new LossChart(document.getElementById("loss-chart"), document.getElementById("loss-smoothing"),
                         document.getElementById("loss-smoothing-value"));
  logView ??= new LogView(document.getElementById("run-log"));
  chart.reset();
  logView.reset();
  document.getElementById("gallery").replaceChildren();
  document.getElementById("compare").hidden = true;
  document.getElementById("run-files").replaceChildren();
  document.getElementById("run-state-files").replaceChildren();
  document.getElementById("run-state").hidden = true;
  document.getElementById("run-download").hidden = true;
  tick();   // follows the run from there while it can still change
}

async function runAction(action) {
  try { await api(`runs/${encodeURIComponent(current.id)}/${action}`, {}); await pollRun(); }
  catch (error) { document.getElementById("run-message").textContent = error.message; }
}

window.addEventListener("hashchange", () => { if (!location.hash.startsWith("#run/")) refreshTitle(); });
window.addEventListener("DOMContentLoaded", () => {
  document.getElementById("run-stop").addEventListener("click", () => runAction("stop"));
  document.getElementById("run-resume").addEventListener("click", () => runAction("resume"));
  document.getElementById("run-edit").addEventListener("click", async () => {
    const values = (await api("import", { toml: current.toml })).values;
    delete values.output?.output_dir;
    location.hash = "#train";
    document.getElementById("trainer").value = current.trainer;
    setValues(values);
  });
});
