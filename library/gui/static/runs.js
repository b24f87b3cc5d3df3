// The runs list and one run's page: live progress, loss chart, samples, files, log, stop / resume.
"use strict";
let current = null;   // { id, next, points, timer, files }
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

function relativeSample(file) {
  const index = file.lastIndexOf("/sample/");
  return index >= 0 ? file.slice(index + 1) : file;
}

function fileUrl(id, path) {
  return withToken(`/api/runs/${encodeURIComponent(id)}/file?path=${encodeURIComponent(path)}`);
}

function drawChart(points) {
  const svg = document.getElementById("loss-chart");
  if (points.length < 2) { svg.replaceChildren(); return; }
  const steps = points.map(p => p[0]), losses = points.map(p => p[1]);
  const [x0, x1] = [Math.min(...steps), Math.max(...steps)], [y0, y1] = [Math.min(...losses), Math.max(...losses)];
  const x = s => 5 + 590 * (s - x0) / Math.max(1, x1 - x0), y = l => 195 - 190 * (l - y0) / Math.max(1e-9, y1 - y0);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points.map(([s, l]) => `${x(s)},${y(l)}`).join(" "));
  line.setAttribute("fill", "none"); line.setAttribute("stroke", "#d9480f"); line.setAttribute("stroke-width", "2");
  line.setAttribute("vector-effect", "non-scaling-stroke");
  svg.replaceChildren(line);
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
  for (const event of events) {
    if (event.event === "step") current.points.push([event.step, event.smoothed_loss ?? event.loss]);
  }
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
  document.getElementById("run-stop").disabled = !ACTIVE.includes(run.status);
  const resume = document.getElementById("run-resume");   // only a stopped run continues; others are never changed
  resume.disabled = run.status !== "stopped";
  resume.title = resume.disabled ? `a ${run.status} run cannot be resumed` : "continue from the saved state";
  const board = document.getElementById("run-tensorboard");
  board.hidden = !run.tensorboard; if (run.tensorboard) board.href = withToken(run.tensorboard);
  drawChart(current.points);
  const gallery = document.getElementById("gallery");
  for (const file of p.samples.map(relativeSample)) {
    if (!gallery.querySelector(`img[data-file="${CSS.escape(file)}"]`)) {
      gallery.append(el("img", { src: fileUrl(id, file), "data-file": file, title: file, alt: file }));
    }
  }
  const files = await api(`runs/${encodeURIComponent(id)}/files`);
  if (current?.id !== id) return;
  const listed = JSON.stringify(files);
  if (listed !== current.files) {   // redrawn only when it changed, so a click on a link is never lost to a redraw
    current.files = listed;
    drawFiles(id, files, run.trainer);
  }
  const log = document.getElementById("run-log");
  const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
  const text = await api(`runs/${encodeURIComponent(id)}/log?lines=100`);
  if (current?.id !== id) return;
  log.textContent = text;
  if (atBottom) log.scrollTop = log.scrollHeight;
  current.toml = run.toml;
  current.trainer = run.trainer;
  follow(ACTIVE.includes(run.status));
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
  current = { id, next: 0, points: [], toml: "", timer: null, files: null };
  document.getElementById("run-title").textContent = id;
  document.getElementById("gallery").replaceChildren();
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
