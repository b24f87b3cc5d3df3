// Talking to the server: every /api/ call carries the token given once as ?token= in the page address.
"use strict";
const token = new URLSearchParams(location.search).get("token") || sessionStorage.getItem("furnace-token") || "";
if (token) sessionStorage.setItem("furnace-token", token);

async function api(path, body, method) {
  const options = { method: method || (body === undefined ? "GET" : "POST"),
                    headers: { "Authorization": "Bearer " + token } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch("/api/" + path, options);
  const data = response.headers.get("content-type")?.includes("json") ? await response.json() : await response.text();
  if (!response.ok) throw Object.assign(new Error(data.detail || response.statusText), { data, status: response.status });
  return data;
}

function withToken(url) {
  const target = new URL(url, location.origin);
  if (token) target.searchParams.set("token", token);
  return target.pathname + target.search + target.hash;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value; else node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function showView(name) {
  for (const view of document.querySelectorAll(".view")) view.hidden = view.id !== "view-" + name;
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  api("roots").then(roots => {
    for (const [list, items] of [["models-list", roots.models], ["datasets-list", roots.datasets]]) {
      document.getElementById(list).replaceChildren(...items.map(item => el("option", { value: item })));
    }
  });
  api("queue").then(queue => {
    const link = document.getElementById("tensorboard-link");
    if (queue.tensorboard) { link.href = withToken(queue.tensorboard); link.hidden = false; }
  });
  route();
});

function route() {
  const [view, id] = (location.hash.slice(1) || "train").split("/");
  if (view === "run" && id) { showView("run"); openRun(decodeURIComponent(id)); return; }
  showView(["train", "runs", "preprocess", "datasets"].includes(view) ? view : "train");
  if (view === "runs") refreshRuns();
}
