// The dataset browser: thumbnails with their captions grouped by `N_name` folder, inline caption editing, the
// doctor's findings per image, tag frequencies with bulk actions, and undo. Captions are user text: they only ever
// reach the page as text (textContent, a textarea's value), never as markup.
"use strict";
const ds = { root: null, path: null, findings: {}, checking: false, recheck: false };

function dsQuery(extra = {}) {
  return new URLSearchParams({ path: ds.path, caption_extension: document.getElementById("ds-extension").value,
                               ...extra }).toString();
}

function dsStatus(text) { document.getElementById("ds-status").textContent = text; }

function dsUndoCount(count) {
  const button = document.getElementById("ds-undo");
  button.disabled = !count;
  button.textContent = count ? `Undo (${count})` : "Undo";
}

function thumbnailUrl(root, path) {
  return withToken(`/api/datasets/${root}/thumbnail?path=${encodeURIComponent(path)}`);
}

async function saveCaption(card) {
  const textarea = card.querySelector("textarea");
  try {
    const saved = await api(`datasets/${ds.root}/caption`, { dataset: ds.path, image: card.dataset.path,
      caption: textarea.value, caption_extension: document.getElementById("ds-extension").value }, "PUT");
    textarea.value = saved.caption;
    card.classList.remove("unsaved");
    card.querySelector(".ds-saved").textContent = "saved";
    dsUndoCount(saved.undo);
    dsStatus(`Saved the caption of ${card.dataset.name}.`);
    await refreshDataset(false);
  } catch (error) { dsStatus(error.message); }
}

function imageCard(image) {
  const id = "ds-caption-" + image.path.replace(/[^A-Za-z0-9]/g, "_");
  const card = el("figure", { class: "ds-card" });
  card.dataset.path = image.path;
  card.dataset.name = image.name;
  const textarea = el("textarea", { id, rows: 3, "aria-label": `Caption of ${image.name}` });
  textarea.value = image.caption ?? "";
  textarea.placeholder = image.caption_error ? `unreadable caption: ${image.caption_error}` : "(no caption)";
  textarea.addEventListener("input", () => {
    card.classList.add("unsaved");
    card.querySelector(".ds-saved").textContent = "unsaved";
  });
  textarea.addEventListener("keydown", event => { if (event.key === "Enter" && event.ctrlKey) saveCaption(card); });
  const save = el("button", { type: "button", text: "Save", "aria-label": `Save the caption of ${image.name}` });
  save.addEventListener("click", () => saveCaption(card));
  card.append(
    el("div", { class: "ds-thumb" }, el("img", { src: thumbnailUrl(ds.root, image.path), alt: image.name, loading: "lazy" }),
       el("ul", { class: "ds-findings" })),
    el("figcaption", { text: image.name }), textarea,
    el("div", { class: "ds-actions" }, save, el("span", { class: "ds-saved", "aria-live": "polite" })));
  return card;
}

function groupSection(group) {
  const about = group.name_error ? group.name_error
    : group.repeats === null ? "no repeat prefix: 1 repeat"
    : `${group.repeats} repeats` + (group.class_tokens ? `, class '${group.class_tokens}'` : "");
  return el("section", { class: "ds-group" },
            el("h3", { text: `${group.name} (${about}, ${group.images.length} images)` }),
            el("div", { class: "ds-grid" }, ...group.images.map(imageCard)));
}

function tagRow([tag, count]) {
  const pick = el("button", { type: "button", class: "ds-tag", text: tag, "aria-label": `Pick tag ${tag}` });
  pick.addEventListener("click", () => { document.getElementById("ds-tag").value = tag; });
  return el("tr", {}, el("td", {}, pick), el("td", { text: String(count) }));
}

function applyFindings() {
  for (const card of document.querySelectorAll("#ds-groups .ds-card")) {
    const found = ds.findings[card.dataset.path] || [];
    card.classList.toggle("has-findings", found.length > 0);
    card.querySelector(".ds-findings").replaceChildren(
      ...found.map(item => el("li", { class: "finding-" + item.kind, text: item.message })));
  }
}

async function runCheck() {
  const problems = document.getElementById("ds-problems");
  const resolution = document.getElementById("ds-resolution").value;
  const opened = `${ds.root}/${ds.path}`;
  try {
    const report = await api(`datasets/${ds.root}/findings?${dsQuery({ resolution })}`);
    if (opened !== `${ds.root}/${ds.path}`) return;   // another dataset was opened meanwhile
    ds.findings = report.images;
    problems.replaceChildren(...report.problems.map(problem =>
      el("li", { class: "problem-" + problem.severity,
                 text: `${problem.severity}: ${problem.folder ? problem.folder + ": " : ""}${problem.message}` })));
    applyFindings();
  } catch (error) { problems.replaceChildren(el("li", { text: error.message })); }
}

// The doctor decodes every image (seconds for hundreds): one check at a time, and one more after it when edits
// came in meanwhile, however many there were.
async function dsCheckFindings() {
  if (ds.checking) { ds.recheck = true; return; }
  ds.checking = true;
  try {
    do { ds.recheck = false; await runCheck(); } while (ds.recheck);
  } finally { ds.checking = false; }
}

// The listing again (captions, tags, undo); the grid itself is rebuilt only when `regroup` (bulk action, undo, open).
async function refreshDataset(regroup = true) {
  const listing = await api(`datasets/${ds.root}/listing?${dsQuery()}`);
  document.querySelector("#ds-tags tbody").replaceChildren(...listing.tags.map(tagRow));
  document.getElementById("ds-tags-empty").hidden = listing.tags.length > 0;
  dsUndoCount(listing.undo);
  if (regroup) {
    document.getElementById("ds-groups").replaceChildren(...listing.groups.map(groupSection));
    applyFindings();
  }
  dsCheckFindings();
  return listing;
}

async function openDataset() {
  const choice = document.getElementById("ds-select").value;
  if (!choice) return;
  const slash = choice.indexOf("/");
  [ds.root, ds.path, ds.findings] = [choice.slice(0, slash), choice.slice(slash + 1), {}];
  document.getElementById("ds-problems").replaceChildren();
  try {
    const listing = await refreshDataset();
    dsStatus(`${listing.images} images in ${listing.groups.length} folder(s).`);
  } catch (error) { dsStatus(error.message); }
}

async function bulkAction() {
  const action = document.getElementById("ds-action").value;
  const tag = document.getElementById("ds-tag").value, renamed = document.getElementById("ds-new").value;
  try {
    const result = await api(`datasets/${ds.root}/tags`, { dataset: ds.path, action, tag, new: renamed,
      caption_extension: document.getElementById("ds-extension").value });
    await refreshDataset();
    const skipped = result.problems.length ? ` Skipped: ${result.problems.join("; ")}` : "";
    dsStatus(`${action} '${tag}': ${result.changed} caption(s) changed (Undo reverts it).${skipped}`);
  } catch (error) { dsStatus(error.message); }
}

async function undoEdit() {
  try {
    const result = await api(`datasets/${ds.root}/undo`, { dataset: ds.path });
    await refreshDataset();
    dsStatus(`Undone: ${result.undone} (${result.files} file(s) restored).`);
  } catch (error) { dsStatus(error.message); }
}

window.addEventListener("DOMContentLoaded", async () => {
  const action = document.getElementById("ds-action");
  const renaming = () => { document.getElementById("ds-new-label").hidden = action.value !== "rename"; };
  action.addEventListener("change", renaming);
  renaming();
  document.getElementById("ds-open").addEventListener("click", openDataset);
  document.getElementById("ds-apply").addEventListener("click", bulkAction);
  document.getElementById("ds-undo").addEventListener("click", undoEdit);
  const found = await api("datasets");
  document.getElementById("ds-select").replaceChildren(
    ...found.map(item => el("option", { value: `${item.root}/${item.path}`, text: item.label })));
});
