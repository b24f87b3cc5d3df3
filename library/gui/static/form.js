// The training form, generated from the config JSON Schema and the server's trainer table (/api/form): the chosen
// trainer's essential options first, every other section collapsed under "Advanced", the sections of the other
// trainers hidden. The server turns the values into TOML and validates them.
"use strict";
const PICKERS = { "model.pretrained_model_name_or_path": "models-list", "dataset.train_data_dir": "datasets-list",
                  "dataset.reg_data_dir": "datasets-list" };
const MULTILINE = new Set(["sample.prompt_text"]);   // text options edited one line per entry
let schema = null;
let layout = null;           // { trainers: {name: {script, label, sections, essentials}}, flags: {path: "--flag"} }
let presets = [];
const fields = [];   // { section, key, kind, input, spec, row }
const sections = {}; // section -> { details, body, count }
const touched = new Set();   // the options the user typed in or loaded: only their errors show before a submit
let submitted = false;
let refreshTimer = null;
let checkedDataset = null;   // the dataset settings the doctor summary was made for
let doctorReport = null;     // { key, report }: the last dataset check and the settings it was made with
let summaryShown = false;    // the "not queued" summary follows the live validation until nothing is left

function resolveRef(spec) {
  return spec.$ref ? schema.$defs[spec.$ref.split("/").pop()] : spec;
}

function fieldKind(spec) {
  const options = (spec.anyOf || [spec]).map(resolveRef).filter(option => option.type !== "null");
  const single = options.length === 1 ? options[0] : {};
  if (single.enum) return { kind: "enum", choices: single.enum };
  // A switch whose unset state means something of its own needs three states: unset, true, false.
  if (single.type === "boolean" && spec.default == null) return { kind: "enum", choices: [true, false] };
  if (["boolean", "integer", "number", "string"].includes(single.type)) return { kind: single.type };
  return { kind: "json" };
}

function buildField(section, key, spec) {
  const { kind, choices } = fieldKind(spec);
  const path = `${section}.${key}`;
  const id = `f-${section}-${key}`;
  let input;
  if (kind === "enum") {
    input = el("select", { id }, el("option", { value: "", text: `(default: ${spec.default ?? "unset"})` }),
               ...choices.map(choice => el("option", { value: choice, text: choice })));
  } else if (kind === "boolean") {
    input = el("input", { id, type: "checkbox" });
  } else if (MULTILINE.has(path)) {
    input = el("textarea", { id, rows: "5", spellcheck: "false" });
  } else {
    input = el("input", { id, type: kind === "integer" || kind === "number" ? "number" : "text", step: "any" });
    if (![undefined, null, ""].includes(spec.default)) input.placeholder = JSON.stringify(spec.default);
    if (PICKERS[path]) input.setAttribute("list", PICKERS[path]);
  }
  input.name = path;
  input.setAttribute("aria-describedby", `${id}-help ${id}-error`);
  input.addEventListener(kind === "boolean" || kind === "enum" ? "change" : "input", () => {
    touched.add(path);
    scheduleRefresh();
  });
  const flag = layout.flags[path];
  const label = el("label", { for: id }, el("span", { class: "title", text: spec.title || key }),
                   el("code", { class: "flag", text: flag || path, title: flag ? "sd-scripts flag" : "TOML key" }));
  const row = el("div", { class: "field", "data-path": path }, label, input,
                 el("span", { class: "help", id: `${id}-help`, text: spec.description || "" }),
                 el("span", { class: "error", id: `${id}-error`, "aria-live": "polite" }));
  fields.push({ section, key, kind, choices, input, spec, row });
  return row;
}

function buildSection(section, ref) {
  const spec = resolveRef(ref);
  const count = el("span", { class: "count" });
  const summary = el("summary", {}, el("span", { class: "title", text: ref.title || section }), count,
                     el("span", { class: "help", text: ref.description || "" }));
  const body = el("div", { class: "section-body" });
  const details = el("details", { id: "section-" + section, class: "section" }, summary, body);
  for (const [key, prop] of Object.entries(spec.properties)) body.append(buildField(section, key, prop));
  sections[section] = { details, body, count };
  return details;
}

function trainer() {
  return layout.trainers[document.getElementById("trainer").value] || layout.trainers.lora;
}

// The sections only other trainers read: hidden, and their values are not sent.
function hiddenSections() {
  const own = new Set(trainer().sections);
  return new Set(Object.values(layout.trainers).flatMap(other => other.sections).filter(name => !own.has(name)));
}

// Place every option: the trainer's essentials in their order at the top, the rest back in their sections.
function applyTrainer() {
  const essentials = trainer().essentials;
  const hidden = hiddenSections();
  for (const field of fields) {
    const path = `${field.section}.${field.key}`;
    if (!essentials.includes(path)) sections[field.section].body.append(field.row);
  }
  const top = document.getElementById("essentials-body");
  top.replaceChildren(...essentials.map(path => fields.find(f => `${f.section}.${f.key}` === path)?.row)
                                    .filter(Boolean));
  for (const [name, { details }] of Object.entries(sections)) details.hidden = hidden.has(name);
  document.getElementById("essentials-title").textContent = `Essentials: ${trainer().label} (${trainer().script})`;
  updateCounts();
}

// Each collapsed section says how many of its options (those not shown among the essentials) are set.
function updateCounts() {
  for (const { body, count } of Object.values(sections)) {
    const set = fields.filter(field => field.row.parentNode === body && readValue(field) !== undefined).length;
    count.textContent = set ? `${set} set` : "";
  }
}

function readValue(field) {
  const { kind, input, spec } = field;
  if (kind === "boolean") return input.checked === Boolean(spec.default) ? undefined : input.checked;
  const text = input.value.trim();
  if (text === "") return undefined;
  if (kind === "enum") return field.choices.find(choice => String(choice) === text);
  if (kind === "integer" || kind === "number") return Number(text);
  if (kind === "json") { try { return JSON.parse(text); } catch { return text; } }
  return text;
}

function formValues() {
  const hidden = hiddenSections();
  const values = {};
  for (const field of fields) {
    const value = hidden.has(field.section) ? undefined : readValue(field);
    if (value !== undefined) (values[field.section] ??= {})[field.key] = value;
  }
  return values;
}

// Fill the form (a preset, an imported TOML, a run edited): the values given count as the user's own.
function setValues(values) {
  for (const field of fields) {
    const value = values[field.section]?.[field.key];
    if (field.kind === "boolean") field.input.checked = value ?? Boolean(field.spec.default);
    else if (value === undefined || value === null) field.input.value = "";
    else field.input.value = field.kind === "json" ? JSON.stringify(value) : String(value);
    if (value !== undefined && value !== null) touched.add(`${field.section}.${field.key}`);
  }
  applyTrainer();
  scheduleRefresh();
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refreshPreview, 250);
}

// Messages show for the options the user has touched; after a submit, all of them.
function showMessages(messages) {
  const shown = submitted ? messages : messages.filter(({ path }) => touched.has(path));
  for (const field of fields) { field.row.classList.remove("invalid"); field.row.querySelector(".error").textContent = ""; }
  for (const { details } of Object.values(sections)) details.classList.remove("invalid");
  const general = [];
  for (const { path, message } of shown) {
    const field = fields.find(f => `${f.section}.${f.key}` === path);
    if (!field) { general.push(message); continue; }
    field.row.classList.add("invalid");
    field.row.querySelector(".error").textContent = message;
    field.row.closest("details.section")?.classList.add("invalid");
  }
  for (const field of fields) field.input.setAttribute("aria-invalid", field.row.classList.contains("invalid"));
  document.getElementById("form-status").textContent = general.join("\n");
  if (summaryShown) showSummary(messages);
}

function reveal(field) {
  const details = field.row.closest("details");
  if (details) details.open = true;
  field.row.scrollIntoView({ block: "center" });
  field.input.focus();
}

// A refused queue says so at the top of the page, one link per problem that brings its field into view.
function showSummary(messages) {
  const summary = document.getElementById("form-summary");
  summaryShown = messages.length > 0;
  summary.hidden = !summaryShown;
  if (!summaryShown) return;
  const items = messages.map(({ path, message }) => {
    const field = fields.find(f => `${f.section}.${f.key}` === path);
    if (!field) return el("li", { text: message });
    const link = el("a", { href: "#train", text: message, "data-path": path });
    link.addEventListener("click", event => { event.preventDefault(); reveal(field); });
    return el("li", {}, link);
  });
  const count = `${messages.length} problem${messages.length === 1 ? "" : "s"}`;
  summary.replaceChildren(el("strong", { text: `not queued: ${count}` }), el("ul", {}, ...items));
}

async function refreshPreview() {
  const values = formValues();
  updateCounts();
  const [preview, check] = await Promise.all([api("toml", { values }), api("validate", { values })]);
  document.getElementById("preview").textContent = preview.toml;
  showMessages(check.messages);
  document.dispatchEvent(new CustomEvent("form-refreshed", { detail: values }));
  const dataset = JSON.stringify(values.dataset || {});
  if (values.dataset?.train_data_dir && dataset !== checkedDataset) { checkedDataset = dataset; checkFormDataset(); }
  return check;
}

// Queue the run: refused with a summary while the form has problems; a dataset the check finds blocking problems in
// is queued only when the user confirms, having read why the run would fail.
async function launch() {
  const status = document.getElementById("form-status");
  const values = formValues();
  submitted = true;
  try {
    const check = await api("validate", { values });
    if (!check.ok) { showMessages(check.messages); showSummary(check.messages); return; }
    const blocking = await blockingProblems(values);
    if (blocking.length && !confirm("The dataset check found problems that will stop this run:\n\n"
                                    + blocking.join("\n") + "\n\nQueue it anyway?")) {
      status.textContent = "not queued: the dataset check found blocking problems (see Dataset check)";
      return;
    }
    const run = await api("runs", { name: document.getElementById("run-name").value, values,
                                    trainer: document.getElementById("trainer").value });
    showSummary([]);
    location.hash = "#run/" + encodeURIComponent(run.id);
  } catch (error) {
    if (error.data?.messages) { showMessages(error.data.messages); showSummary(error.data.messages); }
    else status.textContent = error.message;
  }
}

function download(name, text) {
  const link = el("a", { href: URL.createObjectURL(new Blob([text], { type: "application/toml" })), download: name });
  link.click();
}

async function importFile(event) {
  const file = event.target.files[0];
  if (!file) return;
  try {
    const imported = await api("import", { toml: await file.text() });
    document.getElementById("trainer").value = imported.trainer;
    setValues(imported.values);
  } catch (error) { document.getElementById("form-status").textContent = error.message; }
}

// Presets: the shipped ones, then the user's own (saved from this form, deletable).
async function loadPresets(selected) {
  presets = await api("presets");
  const group = (label, items) => el("optgroup", { label },
    ...items.map(p => el("option", { value: p.name, text: p.name, "data-user": p.user })));
  const shipped = presets.filter(p => !p.user), saved = presets.filter(p => p.user);
  document.getElementById("preset").replaceChildren(group("Shipped", shipped),
                                                    ...(saved.length ? [group("Saved", saved)] : []));
  if (selected) document.getElementById("preset").value = selected;
  presetChosen();
}

function chosenPreset() {
  return presets.find(p => p.name === document.getElementById("preset").value);
}

function presetChosen() {
  document.getElementById("delete-preset").disabled = !chosenPreset()?.user;
}

async function savePreset() {
  const status = document.getElementById("form-status");
  const name = prompt("Save the form as a preset named (letters, digits, - and _):");
  if (!name) return;
  const body = { name, values: formValues() };
  try {
    await api("presets", body);
  } catch (error) {
    if (error.status !== 409 || error.data.detail.includes("shipped")
        || !confirm(`A saved preset is named ${name}. Replace it?`)) {
      status.textContent = `preset not saved: ${error.message}`;
      return;
    }
    await api("presets", { ...body, replace: true });
  }
  status.textContent = "";
  await loadPresets(name);
}

async function deletePreset() {
  const preset = chosenPreset();
  if (!preset?.user || !confirm(`Delete the saved preset ${preset.name}?`)) return;
  try {
    await api("presets/" + encodeURIComponent(preset.name), undefined, "DELETE");
    await loadPresets();
  } catch (error) { document.getElementById("form-status").textContent = error.message; }
}

const DOCTOR_KEYS = ["resolution", "enable_bucket", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps",
                     "bucket_no_upscale", "caption_extension", "on_bad_image"];

function doctorBody(values) {
  const dataset = Object.fromEntries(DOCTOR_KEYS.filter(key => (values.dataset?.[key] ?? "") !== "")
                                                .map(key => [key, values.dataset[key]]));
  // the base model sets the multiple bucket sides are fitted to (16 px for FLUX.1), as the run fits them
  return { path: values.dataset?.train_data_dir || "", dataset, family: values.model?.family || "auto",
           model_path: values.model?.pretrained_model_name_or_path || "" };
}

async function checkFormDataset() {
  const body = doctorBody(formValues());
  const output = document.getElementById("doctor");
  try {
    const answer = await api("doctor", body);
    doctorReport = { key: JSON.stringify(body), report: answer.report };
    output.textContent = answer.text;
  } catch (error) { doctorReport = null; output.textContent = error.message; }
}

// The dataset check's errors (the problems that stop a run) for these values, checked again if the settings changed.
async function blockingProblems(values) {
  if (!values.dataset?.train_data_dir) return [];
  const key = JSON.stringify(doctorBody(values));
  if (doctorReport?.key !== key) await checkFormDataset();
  if (doctorReport?.key !== key) return [];   // no report (a missing folder is the form's own message)
  return doctorReport.report.problems.filter(problem => problem.severity === "error")
    .map(problem => (problem.folder ? problem.folder + ": " : "") + problem.message);
}

window.addEventListener("DOMContentLoaded", async () => {
  [schema, layout] = await Promise.all([api("schema"), api("form")]);
  const choice = document.getElementById("trainer");
  choice.replaceChildren(...Object.entries(layout.trainers).map(([name, { label, script }]) =>
    el("option", { value: name, text: `${label} (${script})` })));
  choice.addEventListener("change", () => { applyTrainer(); scheduleRefresh(); });
  document.getElementById("advanced").append(
    ...Object.entries(schema.properties).map(([section, ref]) => buildSection(section, ref)));
  applyTrainer();
  await loadPresets();
  document.getElementById("preset").addEventListener("change", presetChosen);
  document.getElementById("load-preset").addEventListener("click", () => {
    const preset = chosenPreset();
    choice.value = preset?.trainer || "lora";
    setValues(preset?.values || {});
  });
  document.getElementById("save-preset").addEventListener("click", savePreset);
  document.getElementById("delete-preset").addEventListener("click", deletePreset);
  document.getElementById("launch").addEventListener("click", launch);
  document.getElementById("export").addEventListener("click", async () =>
    download("furnace.toml", (await api("toml", { values: formValues() })).toml));
  document.getElementById("import-file").addEventListener("change", importFile);
  document.getElementById("check-dataset").addEventListener("click", checkFormDataset);
  document.getElementById("config-form").dataset.ready = "true";
  scheduleRefresh();
});
