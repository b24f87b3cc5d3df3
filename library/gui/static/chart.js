// The run page's loss chart (uPlot, vendored in static/vendor/): step on x; the loss, the loss smoothed as TensorBoard
// smooths it (weight from the slider), and for DreamBooth with prior preservation its instance and prior terms.
"use strict";

// TensorBoard's scalar smoothing: an exponential moving average, debiased by the weight of the points seen so far
// (so the first points are not pulled towards 0); non-finite values pass through; a constant series stays as it is.
function smoothTensorBoard(values, weight) {
  const constant = values.every(value => value === values[0]);
  let last = 0, count = 0;
  return values.map(value => {
    if (constant || !Number.isFinite(value)) return value;
    last = last * weight + (1 - weight) * value;
    count += 1;
    return last / (weight === 1 ? 1 : 1 - Math.pow(weight, count));
  });
}

const CHART_SERIES = [   // [field of a step event, label, colour, line width]
  ["loss", "loss", "rgba(217, 72, 15, 0.35)", 1],
  [null, "smoothed loss", "#d9480f", 2],   // computed here from "loss"
  ["instance_loss", "instance loss", "#1971c2", 1],
  ["prior_loss", "prior loss", "#2f9e44", 1],
];

const STEP_TICKS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000, 20000, 50000, 100000];

class LossChart {
  constructor(container, slider, readout) {
    Object.assign(this, { container, slider, readout, plot: null, shown: "" });
    this.reset();
    slider.addEventListener("input", () => this.draw());
    new ResizeObserver(() => this.plot?.setSize(this.size())).observe(container);
  }

  reset() {
    this.steps = []; this.columns = { loss: [], instance_loss: [], prior_loss: [] };
    this.plot?.destroy(); this.plot = null; this.shown = "";
    this.container.replaceChildren(el("p", { class: "chart-empty", text: "No steps yet." }));
  }

  // Step events of a run, in order; a resumed run's repeated steps replace what was drawn from there on.
  add(events) {
    for (const event of events) {
      if (event.event !== "step" || typeof event.loss !== "number") continue;
      while (this.steps.length && this.steps[this.steps.length - 1] >= event.step) {
        this.steps.pop(); for (const column of Object.values(this.columns)) column.pop();
      }
      this.steps.push(event.step);
      for (const [key, column] of Object.entries(this.columns)) column.push(event[key] ?? null);
    }
  }

  size() { return { width: Math.max(200, this.container.clientWidth), height: 220 }; }

  draw() {
    const weight = Number(this.slider.value);
    this.readout.textContent = weight.toFixed(2);
    if (!this.steps.length) return;
    const series = CHART_SERIES.filter(([key]) => key === null || key === "loss" || this.columns[key].some(v => v !== null));
    const data = [this.steps, ...series.map(([key]) => key === null
      ? smoothTensorBoard(this.columns.loss, weight) : this.columns[key])];
    const names = series.map(([, label]) => label).join();
    if (this.plot && names === this.shown) { this.plot.setData(data); return; }
    this.plot?.destroy();
    this.shown = names;
    const ink = getComputedStyle(this.container).color, grid = "rgba(128, 128, 128, 0.25)";
    const axis = label => ({ label, stroke: ink, grid: { stroke: grid }, ticks: { stroke: grid } });
    this.container.replaceChildren();
    this.plot = new uPlot({
      ...this.size(),
      scales: { x: { time: false } },
      series: [{ label: "step" }, ...series.map(([, label, stroke, width]) => ({ label, stroke, width, spanGaps: true }))],
      axes: [{ ...axis("step"), incrs: STEP_TICKS }, { ...axis("loss"), size: 60 }],
      cursor: { drag: { x: true, y: false } },
    }, data, this.container);
  }
}
