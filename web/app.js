// The page of serve.py: follow training through GET /status (every second), draw on #pad, send the drawing to
// POST /predict (debounced), show what comes back.
// No libraries, no external requests: everything it loads comes from the server that served it.
"use strict";

const NETWORKS = ["cnn", "dense"];
const TITLES = { cnn: "CNN", dense: "dense" };
const POLL_MS = 1000; // how often the page asks where training stands
const DEBOUNCE_MS = 120; // while drawing, ask at most this often
const BRUSH = 18; // pen width in canvas pixels: about an MNIST stroke once scaled to 28×28

const pad = document.getElementById("pad");
const pen = pad.getContext("2d");
const statusLine = document.getElementById("status");
const shiftInput = document.getElementById("shift");
let hasInk = false;
let drawing = false;
let timer = null;
let inFlight = false;
let askAgain = false;
let last = null; // the last answer, for the shift control

// --- drawing: pointer events cover mouse, pen and touch alike -----------------------------------------------
function position(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * (pad.width / box.width), (event.clientY - box.top) * (pad.height / box.height)];
}

pad.addEventListener("pointerdown", (event) => {
  drawing = true;
  pad.setPointerCapture(event.pointerId);
  const [x, y] = position(event);
  pen.lineWidth = BRUSH;
  pen.lineCap = "round";
  pen.lineJoin = "round";
  pen.strokeStyle = "#000";
  pen.beginPath();
  pen.moveTo(x, y);
  pen.lineTo(x + 0.01, y); // a tap leaves a dot
  pen.stroke();
  hasInk = true;
  schedule();
});

pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const [x, y] = position(event);
  pen.lineTo(x, y);
  pen.stroke();
  schedule();
});

for (const kind of ["pointerup", "pointercancel"]) {
  pad.addEventListener(kind, () => {
    if (!drawing) return;
    drawing = false;
    clearTimeout(timer);
    ask(); // the finished stroke, at once
  });
}

document.getElementById("clear").addEventListener("click", () => {
  pen.clearRect(0, 0, pad.width, pad.height);
  hasInk = false;
  last = null;
  clearTimeout(timer);
  statusLine.textContent = "Draw a digit 0–9.";
  for (const name of NETWORKS) clearAnswer(name, "–");
});

function clearAnswer(name, by) {
  document.getElementById(`${name}-label`).textContent = "–";
  document.getElementById(`${name}-by`).textContent = by;
  for (const fill of document.querySelectorAll(`#${name}-bars .bar > div`)) fill.style.width = "0";
  for (const text of document.querySelectorAll(`#${name}-bars .p`)) text.textContent = "–";
}

function schedule() {
  clearTimeout(timer);
  timer = setTimeout(ask, DEBOUNCE_MS);
}

// --- asking the server ---------------------------------------------------------------------------------------
async function ask() {
  if (!hasInk) return;
  if (inFlight) { askAgain = true; return; } // one request at a time; the newest drawing goes next
  inFlight = true;
  try {
    const response = await fetch("/predict", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ image: pad.toDataURL("image/png") }), // black ink on transparent
    });
    const answer = await response.json();
    if (!response.ok) {
      statusLine.textContent = answer.error || `the server answered ${response.status}`;
      last = null; // no old answer stays on show as if it were this drawing's
      for (const name of NETWORKS) clearAnswer(name, "–");
    } else {
      last = answer;
      show(answer);
    }
  } catch (error) {
    statusLine.textContent = `no answer from the server (${error.message}); is serve.py still running?`;
  } finally {
    inFlight = false;
    if (askAgain) { askAgain = false; ask(); }
  }
}

// --- showing the answer ----------------------------------------------------------------------------------------
function makeBars(name) {
  const box = document.getElementById(`${name}-bars`);
  for (let digit = 0; digit < 10; digit++) {
    box.insertAdjacentHTML("beforeend",
      `<span>${digit}</span><div class="bar"><div></div></div><span class="p">–</span>`);
  }
}

function show(answer) {
  const says = NETWORKS.filter((name) => answer[name]).map((name) => `${TITLES[name]}: ${answer[name].label}`);
  statusLine.textContent = says.join(", ");
  for (const name of NETWORKS) {
    if (!answer[name]) { clearAnswer(name, "no model yet: waiting for its first epoch"); continue; }
    const model = answer[name].model;
    document.getElementById(`${name}-label`).textContent = answer[name].label;
    document.getElementById(`${name}-by`).textContent = `answered by ${when(model)}`;
    const fills = document.querySelectorAll(`#${name}-bars .bar > div`);
    const texts = document.querySelectorAll(`#${name}-bars .p`);
    answer[name].probabilities.forEach((p, digit) => {
      fills[digit].style.width = `${(p * 100).toFixed(1)}%`;
      texts[digit].textContent = `${(p * 100).toFixed(1)}%`;
    });
    paint(document.getElementById(`saliency-${name}`), answer[name].saliency, heat);
  }
  paint(document.getElementById("preprocessed"), answer.preprocessed.map((row) => row.map((v) => v / 255)), grey);
  showMaps(answer.feature_maps || []);
  showShift();
}

function showMaps(layers) {
  const box = document.getElementById("maps");
  box.replaceChildren();
  for (const layer of layers) {
    const row = document.createElement("div");
    row.className = "layer";
    const title = document.createElement("h3");
    title.textContent = `${layer.layer}: ${layer.shape.join("×")}`;
    row.append(title);
    for (const channel of layer.channels) {
      const canvas = document.createElement("canvas");
      canvas.width = channel[0].length;
      canvas.height = channel.length;
      paint(canvas, channel, grey);
      row.append(canvas);
    }
    box.append(row);
  }
}

function showShift() {
  const pixels = Number(shiftInput.value);
  document.getElementById("shift-value").textContent = pixels;
  if (!last) return;
  const row = last.shifted[pixels];
  for (const name of NETWORKS) {
    document.getElementById(`shift-${name}`).textContent = row[name] ? row[name].label : "–";
    document.getElementById(`shift-${name}-p`).textContent =
      row[name] ? `${(row[name].confidence * 100).toFixed(1)}%` : "–";
  }
  const moved = last.preprocessed.map((line, y) =>
    line.map((_, x) => (y >= pixels && x >= pixels ? last.preprocessed[y - pixels][x - pixels] / 255 : 0)));
  paint(document.getElementById("shifted"), moved, grey);
}
shiftInput.addEventListener("input", showShift);

// values 0–1 → pixels of a small canvas (CSS scales it up, pixelated)
function paint(canvas, values, colour) {
  const context = canvas.getContext("2d");
  const image = context.createImageData(canvas.width, canvas.height);
  values.forEach((line, y) => line.forEach((v, x) => {
    const [r, g, b] = colour(v);
    image.data.set([r, g, b, 255], (y * canvas.width + x) * 4);
  }));
  context.putImageData(image, 0, 0);
}
function grey(v) { const c = Math.round(v * 255); return [c, c, c]; }
function diverging(v) { // -1 blue, 0 white, +1 red
  const fade = Math.round(255 * (1 - Math.min(1, Math.abs(v))));
  return v >= 0 ? [255, fade, fade] : [fade, fade, 255];
}
function heat(v) { return [Math.round(255 * Math.min(1, 2 * v)), Math.round(255 * Math.max(0, 2 * v - 1)), 40]; }

// --- training, as it happens ---------------------------------------------------------------------------------
const seen = { charts: "", models: "" };

async function follow() {
  try {
    const response = await fetch("/status");
    const status = await response.json();
    showLinks(status.links);
    showTraining(status.networks);
  } catch (error) {
    for (const name of NETWORKS) {
      document.querySelector(`#state-${name} .line`).textContent =
        `no answer from the server (${error.message}); is serve.py still running?`;
    }
  } finally {
    setTimeout(follow, POLL_MS);
  }
}

function showTraining(networks) {
  for (const name of NETWORKS) {
    const network = networks[name];
    const item = document.getElementById(`state-${name}`);
    item.dataset.state = network.state;
    item.dataset.epoch = network.epoch;
    item.querySelector(".line").textContent = network.problem ? `${network.line}; ${network.problem}` : network.line;
  }
  const charts = JSON.stringify(NETWORKS.map((name) => [networks[name].epochs, networks[name].history]));
  if (charts !== seen.charts) {
    seen.charts = charts;
    for (const metric of ["accuracy", "loss"]) {
      for (const x of ["epoch", "seconds"]) drawChart(`chart-${metric}-${x}`, networks, metric, x);
    }
  }
  const models = JSON.stringify(NETWORKS.map((name) => networks[name].model));
  if (models !== seen.models) {
    seen.models = models;
    showFirstLayers(networks);
    if (hasInk) ask(); // the drawing, answered again by the newest networks
  }
}

// A line chart in SVG: both networks on shared axes; solid training, dashed validation; a dot per epoch.
function drawChart(id, networks, metric, x) {
  const [width, height, left, right, top, bottom] = [320, 200, 44, 10, 10, 26];
  const lines = [];
  for (const name of NETWORKS) {
    for (const [key, kind] of [[metric, "train"], [`val_${metric}`, "val"]]) {
      const points = networks[name].history.filter((row) => key in row && x in row)
        .map((row) => [row[x], row[key], row.epoch]);
      if (points.length) lines.push({ name, kind, points });
    }
  }
  const svg = document.getElementById(id);
  if (!lines.length) {
    svg.innerHTML = `<text x="${width / 2}" y="${height / 2}" text-anchor="middle">no finished epoch yet</text>`;
    return;
  }
  const xs = lines.flatMap((line) => line.points.map((p) => p[0]));
  const ys = lines.flatMap((line) => line.points.map((p) => p[1]));
  const planned = Math.max(...NETWORKS.map((name) => networks[name].epochs || 0));
  const [x0, x1] = x === "epoch" ? [1, Math.max(2, planned, ...xs)] : [0, Math.max(...xs) * 1.05];
  const pad = (Math.max(...ys) - Math.min(...ys)) * 0.06 || 0.01;
  const y0 = Math.max(0, Math.min(...ys) - pad); // accuracy and loss are never below 0, accuracy never above 1
  const y1 = metric === "accuracy" ? Math.min(1, Math.max(...ys) + pad) : Math.max(...ys) + pad;
  const sx = (v) => left + ((v - x0) / (x1 - x0)) * (width - left - right);
  const sy = (v) => top + (1 - (v - y0) / (y1 - y0)) * (height - top - bottom);
  const parts = [];
  const yStep = niceStep((y1 - y0) / 4);
  for (let v = Math.ceil(y0 / yStep) * yStep; v <= y1 + 1e-9; v += yStep) {
    const digits = Math.max(0, -Math.floor(Math.log10(yStep * (metric === "accuracy" ? 100 : 1))));
    const label = metric === "accuracy" ? `${(v * 100).toFixed(digits)}%` : v.toFixed(digits);
    parts.push(`<line class="grid" x1="${left}" x2="${width - right}" y1="${sy(v)}" y2="${sy(v)}"/>`,
      `<text x="${left - 4}" y="${sy(v) + 3}" text-anchor="end">${label}</text>`);
  }
  const step = x === "epoch" ? Math.max(1, Math.ceil((x1 - x0) / 6)) : niceStep((x1 - x0) / 5);
  for (let v = x0; v <= x1 + 1e-9; v += step) {
    parts.push(`<text x="${sx(v)}" y="${height - bottom + 13}" text-anchor="middle">${Math.round(v * 10) / 10}</text>`);
  }
  parts.push(`<text x="${width - right}" y="${height - 2}" text-anchor="end">${x === "epoch" ? "epoch" : "seconds"}</text>`,
    `<line class="axis" x1="${left}" x2="${width - right}" y1="${height - bottom}" y2="${height - bottom}"/>`,
    `<line class="axis" x1="${left}" x2="${left}" y1="${top}" y2="${height - bottom}"/>`);
  for (const line of lines) {
    const coordinates = line.points.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`);
    parts.push(`<polyline class="${line.name} ${line.kind}" points="${coordinates.join(" ")}"/>`);
    for (const p of line.points) {
      parts.push(`<circle class="pt ${line.name} ${line.kind}" data-epoch="${p[2]}" r="2.2" ` +
        `cx="${sx(p[0]).toFixed(1)}" cy="${sy(p[1]).toFixed(1)}"/>`);
    }
  }
  svg.innerHTML = parts.join("");
}

function niceStep(raw) {
  const power = 10 ** Math.floor(Math.log10(raw || 1));
  return [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) || power * 10;
}

// Each network's first layer as small images: the CNN's kernels tiled on one canvas, the dense units' templates.
function showFirstLayers(networks) {
  const cnn = networks.cnn, dense = networks.dense;
  const kernels = document.getElementById("kernels-cnn");
  const units = document.getElementById("units-dense");
  if (cnn.first_layer) {
    const images = cnn.first_layer.images;
    const [size, columns] = [images[0].length, 8];
    const rows = Math.ceil(images.length / columns);
    kernels.width = columns * (size + 1) - 1;
    kernels.height = rows * (size + 1) - 1;
    const context = kernels.getContext("2d");
    context.fillStyle = "#fff";
    context.fillRect(0, 0, kernels.width, kernels.height);
    images.forEach((image, k) => {
      const tile = document.createElement("canvas");
      [tile.width, tile.height] = [size, size];
      paint(tile, image, diverging);
      context.drawImage(tile, (k % columns) * (size + 1), Math.floor(k / columns) * (size + 1));
    });
  }
  kernels.dataset.epoch = cnn.first_layer ? cnn.model.epoch : "";
  if (dense.first_layer) {
    units.replaceChildren(...dense.first_layer.images.map((image) => {
      const canvas = document.createElement("canvas");
      [canvas.width, canvas.height] = [image[0].length, image.length];
      paint(canvas, image, diverging);
      return canvas;
    }));
  }
  units.dataset.epoch = dense.first_layer ? dense.model.epoch : "";
  kernels.hidden = !cnn.first_layer;
  units.hidden = !dense.first_layer;
  document.getElementById("kernels-cnn-caption").textContent = cnn.first_layer
    ? `CNN: all ${cnn.first_layer.images.length} kernels of ${cnn.first_layer.layer}, ` +
      `${cnn.first_layer.images[0].length}×${cnn.first_layer.images[0][0].length}, in ${when(cnn.model)}`
    : "CNN: no model yet";
  document.getElementById("units-dense-caption").textContent = dense.first_layer
    ? `Dense: ${dense.first_layer.images.length} of the ${dense.first_layer.units} units of ` +
      `${dense.first_layer.layer}, their 784 weights as 28×28, in ${when(dense.model)}`
    : "Dense: no model yet";
}

function when(model) { // "the model after epoch 3", "the finished model (5 epochs)"
  if (!model.final) return `the model after epoch ${model.epoch}`;
  return model.epoch ? `the finished model (${model.epoch} epoch${model.epoch === 1 ? "" : "s"})` : "the finished model";
}

// --- links to what the other scripts made -------------------------------------------------------------------
function showLinks(links) {
  const names = { "/results/report.html": "the full report", "/results/comparison.png": "the comparison figure" };
  const footer = document.getElementById("links");
  const present = Object.entries(links).filter(([, exists]) => exists);
  const text = present.length ? present.map(([url]) => names[url]).join("|") : "none";
  if (footer.dataset.shown === text) return;
  footer.dataset.shown = text;
  footer.replaceChildren();
  if (present.length === 0) {
    footer.textContent = "Run compare.py for the comparison figure, and make lab for the full report (the lesson notebook, run).";
    return;
  }
  for (const [url] of present) {
    const link = document.createElement("a");
    link.href = url;
    link.textContent = names[url];
    footer.append(link);
  }
}

makeBars("cnn");
makeBars("dense");
follow();
