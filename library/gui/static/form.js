// The training form, generated from the config JSON Schema; the server turns it into TOML and validates it.
"use strict";
const PICKERS = { "model.pretrained_model_name_or_path": "models-list", "dataset.train_data_dir": "datasets-list",
                  "dataset.reg_data_dir": "datasets-list" };
let schema = null;
let presets = [];
const fields = [];   // { section, key, kind, input, spec, row }
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
  const id = `f-${section}-${key}`;
  let input;
  if (kind === "enum") {
    input = el("select", { id }, el("option", { value: "", text: `(default: ${spec.default ?? "unset"})` }),
               ...choices.map(choice => el("option", { value: choice, text: choice })));
  } else if (kind === "boolean") {
    input = el("input", { id, type: "checkbox" });
  } else {
    input = el("input", { id, type: kind === "integer" || kind === "number" ? "number" : "text", step: "any" });
    if (spec.default !== undefined && spec.default !== null) input.placeholder = JSON.stringify(spec.default);
    if (PICKERS[`${section}.${key}`]) input.setAttribute("list", PICKERS[`${section}.${key}`]);
  }
  input.name = `${section}.${key}`;
  input.addEventListener(kind === "boolean" || kind === "enum" ? "change" : "input", scheduleRefresh);
  const row = el("div", { class: "field", "data-path": `${section}.${key}` },
                 el("label", { for: id, text: key }), input,
                 el("span", { class: "help", text: spec.description || "" }), el("span", { class: "error" }));
  fields.push({ section, key, kind, choices, input, spec, row });
  return row;
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
  const values = {};
  for (const field of fields) {
    const value = readValue(field);
    if (value !== undefined) (values[field.section] ??= {})[field.key] = value;
  }
  return values;
}

function setValues(values) {
  for (const field of fields) {
    const value = values[field.section]?.[field.key];
    if (field.kind === "boolean") field.input.checked = value ?? Boolean(field.spec.default);
    else if (value === undefined || value === null) field.input.value = "";
    else field.input.value = field.kind === "json" ? JSON.stringify(value) : String(value);
  }
  scheduleRefresh();
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(refreshPreview, 250);
}

function showMessages(messages) {
  for (const field of fields) { field.row.classList.remove("invalid"); field.row.querySelector(".error").textContent = ""; }
  const general = [];
  for (const { path, message } of messages) {
    const row = document.querySelector(`.field[data-path="${path}"]`);
    if (row) { row.classList.add("invalid"); row.querySelector(".error").textContent = message; }
    else general.push(message);
  }
  document.getElementById("form-status").textContent = general.join("\n");
  if (summaryShown) showSummary(messages);
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
    link.addEventListener("click", event => {
      event.preventDefault();
      field.row.scrollIntoView({ block: "center" });
      field.input.focus();
    });
    return el("li", {}, link);
  });
  const count = `${messages.length} problem${messages.length === 1 ? "" : "s"}`;
  summary.replaceChildren(el("strong", { text: `not queued: ${count}` }), el("ul", {}, ...items));
}

async function refreshPreview() {
  const values = formValues();
  const [preview, check] = await Promise.all([api("toml", { values }), api("validate", { values })]);
  document.getElementById("preview").textContent = preview.toml;
  showMessages(check.messages);
  const dataset = JSON.stringify(values.dataset || {});
  if (values.dataset?.train_data_dir && dataset !== checkedDataset) { checkedDataset = dataset; checkDataset(); }
  return check;
}

// Queue the run: refused with a summary while the form has problems; a dataset the check finds blocking problems in
// is queued only when the user confirms, having read why the run would fail.
async function launch() {
  const status = document.getElementById("form-status");
  const values = formValues();
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
  try { setValues((await api("import", { toml: await file.text() })).values); }
  catch (error) { document.getElementById("form-status").textContent = error.message; }
}

const DOCTOR_KEYS = ["resolution", "enable_bucket", "min_bucket_reso", "max_bucket_reso", "bucket_reso_steps",
                     "bucket_no_upscale", "caption_extension", "on_bad_image"];

function doctorBody(values) {
  const dataset = Object.fromEntries(DOCTOR_KEYS.filter(key => (values.dataset?.[key] ?? "") !== "")
                                                .map(key => [key, values.dataset[key]]));
  return { path: values.dataset?.train_data_dir || "", dataset };
}

async function checkDataset() {
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
  if (doctorReport?.key !== key) await checkDataset();
  if (doctorReport?.key !== key) return [];   // no report (a missing folder is the form's own message)
  return doctorReport.report.problems.filter(problem => problem.severity === "error")
    .map(problem => (problem.folder ? problem.folder + ": " : "") + problem.message);
}

window.addEventListener("DOMContentLoaded", async () => {
  schema = await api("schema");
  const form = document.getElementById("config-form");
  for (const [section, ref] of Object.entries(schema.properties)) {
    const spec = resolveRef(ref);
    const fieldset = el("fieldset", { id: "section-" + section }, el("legend", { text: section, title: ref.description || "" }));
    for (const [key, prop] of Object.entries(spec.properties)) fieldset.append(buildField(section, key, prop));
    form.append(fieldset);
  }
  presets = await api("presets");
  document.getElementById("preset").replaceChildren(...presets.map(p => el("option", { value: p.name, text: p.name })));
  document.getElementById("load-preset").addEventListener("click", () => {
    const preset = presets.find(p => p.name === document.getElementById("preset").value);
    document.getElementById("trainer").value = preset?.trainer || "lora";
    setValues(preset?.values || {});
  });
  document.getElementById("launch").addEventListener("click", launch);
  document.getElementById("export").addEventListener("click", async () =>
    download("furnace.toml", (await api("toml", { values: formValues() })).toml));
  document.getElementById("import-file").addEventListener("change", importFile);
  document.getElementById("check-dataset").addEventListener("click", checkDataset);
  form.dataset.ready = "true";
  scheduleRefresh();
});
