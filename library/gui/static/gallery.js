// The run page's pictures: previews grouped by step with the prompt and seed under each, the compare grid, and a
// full-size view of either in a dialog (Escape or Close shuts it).
"use strict";

function imageCaption(image) {
  const parts = [image.prompt];
  if (image.negative_prompt) parts.push(`negative: ${image.negative_prompt}`);
  const settings = [["Seed", "seed"], ["Steps", "steps"], ["Sampler", "sampler"], ["CFG scale", "CFG"], ["Size", "size"]]
    .filter(([key]) => image[key] !== undefined).map(([key, label]) => `${label} ${image[key]}`);
  if (settings.length) parts.push(settings.join(", "));
  return parts.join(" · ");
}

function openImage(url, caption, alt) {
  const dialog = document.getElementById("image-dialog");
  document.getElementById("dialog-image").src = url;
  document.getElementById("dialog-image").alt = alt;
  document.getElementById("dialog-caption").textContent = caption;
  document.getElementById("dialog-file").href = url;
  dialog.showModal();
}

function sampleFigure(id, image) {
  const url = fileUrl(id, image.path), alt = `sample: ${image.prompt}`;
  const open = el("button", { type: "button", class: "thumb", title: "Show full size" },
    el("img", { src: url, alt, "data-file": image.path, loading: "lazy" }));
  open.addEventListener("click", () => openImage(url, imageCaption(image), alt));
  return el("figure", { class: "sample" }, open,
    el("figcaption", {}, el("span", { class: "sample-prompt", text: image.prompt }),
      el("span", { class: "sample-seed", text: image.Seed !== undefined ? `seed ${image.Seed}` : "" })));
}

// Redrawn only when the run's pictures changed, so an open dialog or a click on a picture is never lost to a redraw.
function drawGallery(id, pictures) {
  const gallery = document.getElementById("gallery");
  gallery.replaceChildren(...pictures.steps.map(group => el("section", { class: "gallery-step", "data-step": group.step },
    el("h4", { text: `Step ${group.step}` }),
    el("div", { class: "gallery-row" }, ...group.images.map(image => sampleFigure(id, image))))));
  if (!pictures.steps.length) gallery.append(el("p", { text: "No samples yet." }));
  const compare = document.getElementById("compare");
  compare.hidden = !pictures.compare;
  if (pictures.compare) {
    const url = fileUrl(id, pictures.compare);
    document.getElementById("compare-image").src = url;
    compare.dataset.url = url;
  }
}

window.addEventListener("DOMContentLoaded", () => {
  const dialog = document.getElementById("image-dialog");
  dialog.addEventListener("click", event => {   // a click on the backdrop (outside the dialog's box) closes it
    const box = dialog.getBoundingClientRect();
    const outside = event.clientX < box.left || event.clientX > box.right || event.clientY < box.top
      || event.clientY > box.bottom;
    if (event.target === dialog && outside) dialog.close();
  });
  dialog.addEventListener("close", () => { document.getElementById("dialog-image").removeAttribute("src"); });
  document.getElementById("compare-open").addEventListener("click", () => openImage(
    document.getElementById("compare").dataset.url, "Compare grid: the run's saved files by strength and prompt",
    document.getElementById("compare-image").alt));
});
