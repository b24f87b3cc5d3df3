// The run page's log: only the lines added since the last poll are appended (the server collapses carriage-return
// redraws and removes escape codes); the line a progress bar is still redrawing is one live line after them.
"use strict";

const LOG_KEEP_LINES = 2000;   // older lines leave the page (the whole log stays a download in the files list)

class LogView {
  constructor(container) {
    this.lines = container.querySelector(".log-lines");
    this.live = container.querySelector(".log-live");
    this.container = container;
    this.reset();
  }

  reset() {
    this.next = null; this.chunks = []; this.count = 0;
    this.live.textContent = "";
    this.lines.replaceChildren(this.live);
  }

  fetch(id) {
    const after = this.next === null ? "" : `&after=${this.next}`;
    return api(`runs/${encodeURIComponent(id)}/log/follow?lines=200${after}`);
  }

  // Appends a chunk from /log/follow; a chunk that starts over (the log was replaced) redraws from it.
  show(chunk) {
    const box = this.container;
    const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 20;
    if (this.next !== null && chunk.next < this.next) this.reset();
    this.next = chunk.next;
    if (chunk.lines.length) {
      const node = document.createTextNode(chunk.lines.join("\n") + "\n");
      this.live.before(node);
      this.chunks.push([node, chunk.lines.length]);
      this.count += chunk.lines.length;
      while (this.count > LOG_KEEP_LINES && this.chunks.length > 1) {
        const [oldest, lines] = this.chunks.shift();
        oldest.remove(); this.count -= lines;
      }
    }
    if (this.live.textContent !== chunk.partial) this.live.textContent = chunk.partial;
    this.live.hidden = !chunk.partial;
    if (atBottom) box.scrollTop = box.scrollHeight;
  }
}
