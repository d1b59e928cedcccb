// The page of serve.py: draw on #pad, send the drawing to POST /predict (debounced), show what comes back.
// No libraries, no external requests: everything it loads comes from the server that served it.
"use strict";

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
  for (const name of ["cnn", "dense"]) {
    document.getElementById(`${name}-label`).textContent = "–";
    for (const fill of document.querySelectorAll(`#${name}-bars .bar > div`)) fill.style.width = "0";
  }
});

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
  statusLine.textContent = `CNN: ${answer.cnn.label}, dense: ${answer.dense.label}`;
  for (const name of ["cnn", "dense"]) {
    document.getElementById(`${name}-label`).textContent = answer[name].label;
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
  for (const name of ["cnn", "dense"]) {
    document.getElementById(`shift-${name}`).textContent = row[name].label;
    document.getElementById(`shift-${name}-p`).textContent = `${(row[name].confidence * 100).toFixed(1)}%`;
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
function heat(v) { return [Math.round(255 * Math.min(1, 2 * v)), Math.round(255 * Math.max(0, 2 * v - 1)), 40]; }

// --- links to what the other scripts made -------------------------------------------------------------------
async function showLinks() {
  const response = await fetch("/status");
  const { links } = await response.json();
  const names = { "/results/report.html": "the full report", "/results/comparison.png": "the comparison figure" };
  const footer = document.getElementById("links");
  const present = Object.entries(links).filter(([, exists]) => exists);
  footer.replaceChildren();
  if (present.length === 0) {
    footer.textContent = "Run compare.py and report.py for the comparison figure and the full report.";
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
showLinks();
