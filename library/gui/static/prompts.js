// The sample-prompt editor: under the `sample.prompt_text` box, each prompt line as the trainers' own parser reads it
// (/api/prompts/check): its problem, or the prompt, negative prompt, size, steps, CFG, seed and sampler it renders
// with. A prompt file named in `sample.prompts` can be taken over into the editor. All text is set as text, never as
// markup.
"use strict";
const PROMPT_COLUMNS = [["prompt", "Prompt"], ["negative_prompt", "Negative"], ["size", "Size"], ["steps", "Steps"],
                        ["cfg_scale", "CFG"], ["seed", "Seed"], ["sampler", "Sampler"]];
let promptCheck = 0;   // the latest check asked for: an older answer arriving late is dropped

function promptCell(settings, key) {
  return key === "size" ? `${settings.width}×${settings.height}` : String(settings[key] ?? "");
}

function promptRow({ line, problem, settings }) {
  const number = el("th", { scope: "row", text: String(line) });
  if (problem) {
    return el("tr", { class: "prompt-bad", "data-line": line }, number,
              el("td", { colspan: String(PROMPT_COLUMNS.length), text: `line ${line}: ${problem}` }));
  }
  return el("tr", { "data-line": line }, number,
            ...PROMPT_COLUMNS.map(([key]) => el("td", { text: promptCell(settings, key) })));
}

async function checkPrompts(values) {
  const box = document.getElementById("prompt-lines");
  const ticket = ++promptCheck;
  if (!values.sample?.prompt_text) { box.replaceChildren(); return; }
  const { lines } = await api("prompts/check", { values });
  if (ticket !== promptCheck) return;
  const bad = lines.filter(line => line.problem).length;
  const summary = !lines.length ? "no prompts (only blank or # comment lines)"
    : bad ? `${bad} of ${lines.length} prompt lines have problems` : `${lines.length} prompts, all valid`;
  const head = el("tr", {}, el("th", { scope: "col", text: "Line" }),
                  ...PROMPT_COLUMNS.map(([, title]) => el("th", { scope: "col", text: title })));
  box.replaceChildren(el("p", { class: bad || !lines.length ? "prompt-summary status" : "prompt-summary",
                                text: summary }),
                      el("table", { class: "prompt-table" }, el("caption", { text: "Sample prompts as parsed" }),
                         el("thead", {}, head), el("tbody", {}, ...lines.map(promptRow))));
}

// Take the lines of the file named in sample.prompts into the editor (the file itself is not changed).
async function takeOverPromptFile() {
  const file = document.getElementById("f-sample-prompts"), editor = document.getElementById("f-sample-prompt_text");
  const status = document.getElementById("prompt-file-status");
  try {
    const { text } = await api("prompts/file?path=" + encodeURIComponent(file.value.trim()));
    editor.value = text;
    file.value = "";
    for (const input of [file, editor]) input.dispatchEvent(new Event("input"));
    status.textContent = "";
  } catch (error) { status.textContent = error.message; }
}

function showTakeButton() {
  document.getElementById("prompt-file").hidden = !document.getElementById("f-sample-prompts").value.trim();
}

// Built on the first refresh of the form (the form and its fields exist by then), kept in step with every refresh.
function setUpPromptEditor() {
  const take = el("button", { type: "button", id: "prompt-take-file", text: "Edit the prompt file's lines here" });
  take.addEventListener("click", takeOverPromptFile);
  document.getElementById("f-sample-prompts").addEventListener("input", showTakeButton);
  document.getElementById("f-sample-prompt_text").closest(".field").append(
    el("div", { id: "prompt-file", class: "prompt-file" }, take,
       el("span", { id: "prompt-file-status", class: "status", "aria-live": "polite" })),
    el("div", { id: "prompt-lines", class: "prompt-lines", "aria-live": "polite" }));
}

document.addEventListener("form-refreshed", event => {
  if (!document.getElementById("prompt-lines")) setUpPromptEditor();
  showTakeButton();
  checkPrompts(event.detail);
});
