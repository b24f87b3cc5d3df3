// The preprocess page: crop / tag / caption / tags / doctor, with forms built from the CLI's own options.
"use strict";
let commands = {};

// One input per value of a fixed group (`--replace OLD NEW`), labelled by its name; "add" for repeatable options.
function partsRow(option) {
  return el("div", { class: "parts-row" }, ...option.parts.map(part =>
    el("input", { size: 20, placeholder: part, "aria-label": `${option.flag} ${part}`, "data-part": part })));
}

function partsInput(option) {
  const rows = el("div", { id: "ppo-" + option.dest, class: "parts" }, partsRow(option));
  if (!option.repeat) return rows;
  const add = el("button", { type: "button", text: `add another ${option.flag}` });
  add.addEventListener("click", () => rows.append(partsRow(option)));
  return el("div", {}, rows, add);
}

// A group's values as arguments: rows left blank are skipped, a half-filled one is refused naming what is missing.
function partsArgs(option) {
  const args = [];
  for (const row of document.getElementById("ppo-" + option.dest).children) {
    const values = [...row.querySelectorAll("input")].map(input => input.value.trim());
    if (values.every(value => !value)) continue;
    const missing = option.parts.filter((part, index) => !values[index]);
    if (missing.length) throw new Error(`${option.flag}: fill in ${missing.join(" and ")} too`);
    args.push(option.flag, ...values);
  }
  return args;
}

function optionRow(option) {
  const id = "ppo-" + option.dest;
  const input = option.parts ? partsInput(option) : option.kind === "flag" ? el("input", { id, type: "checkbox" })
    : option.choices ? el("select", { id }, el("option", { value: "", text: `(default: ${option.default ?? "-"})` }),
                          ...option.choices.map(choice => el("option", { value: choice, text: choice })))
    : el("input", { id, size: 50, placeholder: option.default ?? "" });
  if (option.path && !option.flag?.includes("model")) input.setAttribute("list", "datasets-list");
  const several = option.parts ? "" : option.kind === "multi" || option.repeat ? " (several: separate with ;)" : "";
  const label = option.parts ? el("span", { text: option.flag }) : el("label", { for: id, text: option.flag || option.metavar || option.dest });
  return el("div", { class: "field" }, label,
            input, el("span", { class: "help", text: option.help + several }));
}

function commandArgs(name) {
  const args = [];
  for (const option of commands[name].options) {
    if (option.parts) { args.push(...partsArgs(option)); continue; }
    const input = document.getElementById("ppo-" + option.dest);
    if (option.kind === "flag") { if (input.checked) args.push(option.flag); continue; }
    const text = input.value.trim();
    if (!text) continue;
    const parts = option.kind === "multi" || option.repeat ? text.split(";").map(part => part.trim()) : [text];
    if (!option.flag) { args.push(...parts); continue; }
    if (option.repeat) for (const part of parts) args.push(option.flag, ...(option.kind === "multi" ? part.split(",") : [part]));
    else args.push(option.flag, ...parts);
  }
  return args;
}

function showCommand(name) {
  document.getElementById("pp-description").textContent = commands[name].description;
  document.getElementById("pp-form").replaceChildren(...commands[name].options.map(optionRow));
}

window.addEventListener("DOMContentLoaded", async () => {
  commands = await api("preprocess");
  const select = document.getElementById("pp-command");
  select.replaceChildren(...Object.keys(commands).map(name => el("option", { value: name, text: name })));
  select.value = "doctor";
  select.addEventListener("change", () => showCommand(select.value));
  showCommand("doctor");
  document.getElementById("pp-run").addEventListener("click", startJob);
  document.getElementById("pp-cancel").addEventListener("click", () =>
    ppJob && api(`preprocess/jobs/${ppJob}/cancel`, {}).catch(showJobError));
  const starts = ppStarts;
  const [latest] = await api("preprocess/jobs");   // after a reload, the job the page was showing (newest first)
  if (latest && starts === ppStarts) showJob(latest, false);   // unless the user started one meanwhile
});

let ppJob = null;   // the job the page follows
let ppStarts = 0;   // jobs started from this page
let ppTimer = null;

function showJobError(error) {
  document.getElementById("pp-status").textContent = "failed";
  document.getElementById("pp-output").textContent = error.message;
}

// A new job starts from a blank slate: nothing of the previous job's bar, label, status or log stays on the page.
function clearJob() {
  const bar = document.getElementById("pp-progress");
  bar.max = 100;
  bar.value = 0;
  for (const id of ["pp-progress-text", "pp-status", "pp-output", "pp-log", "pp-thumbs"]) {
    document.getElementById(id).textContent = "";
  }
}

const PP_THUMBS = 48;   // thumbnails shown of a result; the Datasets view shows them all

// A finished job's result: the summary, and thumbnails of the dataset folder it wrote (or changed in place), scrolled
// into view when the page saw the job finish.
async function showResult(job, scroll) {
  const thumbs = document.getElementById("pp-thumbs");
  if (job.status === "done" && job.result) {
    const { root, path } = job.result;
    try {
      const listing = await api(`datasets/${root}/listing?${new URLSearchParams({ path })}`);
      thumbs.replaceChildren(...listing.groups.flatMap(group => group.images).slice(0, PP_THUMBS).map(image =>
        el("figure", { class: "ds-card" }, el("img", { src: thumbnailUrl(root, image.path), alt: image.name }),
           el("figcaption", { text: image.caption ? `${image.path}: ${image.caption}` : image.path }))));
    } catch (error) { thumbs.replaceChildren(el("p", { text: error.message })); }
  }
  if (scroll) document.getElementById("pp-result-title").scrollIntoView({ block: "start" });
}

async function startJob() {
  const select = document.getElementById("pp-command");
  clearTimeout(ppTimer);
  ppJob = null;
  ppStarts += 1;
  clearJob();
  try {
    showJob(await api("preprocess", { command: select.value, args: commandArgs(select.value) }));
  } catch (error) { ppJob = null; showJobError(error); }
}

function showJob(job, seen = true) {
  ppJob = job.id;
  const { current, total, percent, label } = job.progress;
  const bar = document.getElementById("pp-progress");
  bar.max = total || 100;
  if (current !== undefined) bar.value = current; else if (percent !== undefined) bar.value = percent;
  else bar.removeAttribute("value");
  document.getElementById("pp-progress-text").textContent = current !== undefined
    ? `${label ? label + " " : ""}${current} / ${total}` : percent !== undefined ? `${percent.toFixed(0)}%` : "";
  document.getElementById("pp-status").textContent = job.status + (job.message ? ": " + job.message : "");
  document.getElementById("pp-cancel").disabled = job.status !== "running";
  document.getElementById("pp-output").textContent = job.status === "running" ? ""
    : `exit code ${job.returncode}\n${job.stdout}`;
  document.getElementById("pp-log").textContent = job.log;
  if (job.status === "running") ppTimer = setTimeout(pollJob, 500); else showResult(job, seen);
}

async function pollJob() {
  const id = ppJob;
  try {
    const job = await api(`preprocess/jobs/${id}`);
    if (id === ppJob) showJob(job);
  } catch (error) { showJobError(error); }
}
