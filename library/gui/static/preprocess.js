// The preprocess page: crop / tag / caption / tags / doctor, with forms built from the CLI's own options.
"use strict";
let commands = {};

function optionRow(option) {
  const id = "ppo-" + option.dest;
  const input = option.kind === "flag" ? el("input", { id, type: "checkbox" })
    : option.choices ? el("select", { id }, el("option", { value: "", text: `(default: ${option.default ?? "-"})` }),
                          ...option.choices.map(choice => el("option", { value: choice, text: choice })))
    : el("input", { id, size: 50, placeholder: option.default ?? "" });
  if (option.path && !option.flag?.includes("model")) input.setAttribute("list", "datasets-list");
  const several = option.kind === "multi" || option.repeat ? " (several: separate with ;)" : "";
  return el("div", { class: "field" }, el("label", { for: id, text: option.flag || option.metavar || option.dest }),
            input, el("span", { class: "help", text: option.help + several }));
}

function commandArgs(name) {
  const args = [];
  for (const option of commands[name].options) {
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
  document.getElementById("pp-run").addEventListener("click", async () => {
    const output = document.getElementById("pp-output");
    output.textContent = "running…";
    try {
      const result = await api("preprocess", { command: select.value, args: commandArgs(select.value) });
      output.textContent = `exit code ${result.returncode}\n${result.stdout}${result.stderr}`;
    } catch (error) { output.textContent = error.message; }
  });
});
