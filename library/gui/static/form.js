// The training form, generated from the config JSON Schema; the server turns it into TOML and validates it.
"use strict";
const PICKERS = { "model.pretrained_model_name_or_path": "models-list", "dataset.train_data_dir": "datasets-list",
                  "dataset.reg_data_dir": "datasets-list" };
let schema = null;
let presets = [];
const fields = [];   // { section, key, kind, input, spec, row }
let refreshTimer = null;
let checkedDataset = null;   // the dataset settings the doctor summary was made for

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

async function launch() {
  const status = document.getElementById("form-status");
  try {
    const run = await api("runs", { name: document.getElementById("run-name").value, values: formValues(),
                                    trainer: document.getElementById("trainer").value });
    location.hash = "#run/" + encodeURIComponent(run.id);
  } catch (error) {
    if (error.data?.messages) showMessages(error.data.messages); else status.textContent = error.message;
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

async function checkDataset() {
  const values = formValues();
  const dataset = Object.fromEntries(DOCTOR_KEYS.filter(key => (values.dataset?.[key] ?? "") !== "")
                                                .map(key => [key, values.dataset[key]]));
  const body = { path: values.dataset?.train_data_dir || "", dataset };
  const output = document.getElementById("doctor");
  try { output.textContent = (await api("doctor", body)).text; } catch (error) { output.textContent = error.message; }
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
