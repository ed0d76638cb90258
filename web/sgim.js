// comfyui-sgim frontend: the layer-mask bar editor on "Layer Mask (SGIM)" and the live loss readout
// on "Optimize Latent (SGIM)".
//
// Layer Mask: the node's `weights` STRING widget (hidden here) stores a JSON list with one value per
// W+ layer, so it is saved with the workflow and sent to the server like any widget. The number of
// layers and their coarse/middle/fine groups come from GET /sgim/generator_info?name=<file>, where
// <file> is the generator_name of the Load StyleGAN node wired into the `generator` input.
// Optimize Latent: the server sends the custom websocket event "sgim.loss" every step
// ({node, step, total, terms}); the readout shows the latest terms.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const LOSS_EVENT = "sgim.loss";
const GROUP_COLOURS = { coarse: "#5b8def", middle: "#3fb27f", fine: "#e0a13a" };
const EDITOR_HEIGHT = 150;

function findWidget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

// generator_name of the loader feeding `generator` (following reroutes and the like).
function upstreamGeneratorName(node) {
  let current = node;
  for (let hop = 0; hop < 8 && current; hop++) {
    const slot = current.inputs?.findIndex((i) => i.name === "generator" || i.type === "SGIM_STYLEGAN");
    const index = slot >= 0 ? slot : 0;
    const source = current.getInputNode?.(index);
    if (!source) return null;
    const widget = findWidget(source, "generator_name");
    if (widget) return widget.value ?? null;
    current = source;
  }
  return null;
}

function parseWeights(text) {
  try {
    const values = JSON.parse(text || "");
    return Array.isArray(values) && values.every((v) => typeof v === "number") ? values : null;
  } catch {
    return null;
  }
}

function wrapText(ctx, text, x, y, maxWidth, lineHeight) {
  let line = "";
  for (const word of String(text).split(" ")) {
    const candidate = line ? `${line} ${word}` : word;
    if (line && ctx.measureText(candidate).width > maxWidth) {
      ctx.fillText(line, x, y);
      y += lineHeight;
      line = word;
    } else {
      line = candidate;
    }
  }
  if (line) ctx.fillText(line, x, y);
}

class LayerMaskEditor {
  constructor(node) {
    this.node = node;
    this.info = null; // {num_ws, groups: {coarse: [..], middle: [..], fine: [..]}}
    this.infoName = undefined;
    this.message = "connect Load StyleGAN (SGIM) to 'generator'";
    this.dragging = false;

    this.element = document.createElement("div");
    this.element.className = "sgim-layer-mask";
    Object.assign(this.element.style, { display: "flex", flexDirection: "column", gap: "4px", width: "100%" });

    const buttons = document.createElement("div");
    Object.assign(buttons.style, { display: "flex", gap: "4px", flexWrap: "wrap" });
    for (const preset of ["all", "coarse", "middle", "fine", "none"]) {
      const button = document.createElement("button");
      button.textContent = preset;
      button.title = preset === "none" ? "freeze every layer, then drag bars up" : `set the ${preset} layers free, freeze the rest`;
      Object.assign(button.style, { fontSize: "11px", padding: "1px 6px", cursor: "pointer" });
      button.addEventListener("click", (event) => {
        event.stopPropagation();
        this.applyPreset(preset);
      });
      buttons.append(button);
    }
    this.canvas = document.createElement("canvas");
    this.canvas.className = "sgim-layer-mask-bars";
    Object.assign(this.canvas.style, { width: "100%", height: `${EDITOR_HEIGHT - 30}px`, cursor: "ns-resize" });
    this.canvas.addEventListener("pointerdown", (e) => this.onPointer(e, true));
    this.canvas.addEventListener("pointermove", (e) => this.dragging && this.onPointer(e, false));
    const stop = () => (this.dragging = false);
    this.canvas.addEventListener("pointerup", stop);
    this.canvas.addEventListener("pointerleave", stop);
    this.element.append(buttons, this.canvas);
  }

  get weightsWidget() {
    return findWidget(this.node, "weights");
  }

  get presetWidget() {
    return findWidget(this.node, "preset");
  }

  numLayers() {
    return this.info?.num_ws ?? parseWeights(this.weightsWidget?.value)?.length ?? 0;
  }

  groupOf(index) {
    for (const [group, values] of Object.entries(this.info?.groups ?? {})) {
      if (values[index] > 0) return group;
    }
    return "fine";
  }

  // Values shown: the custom weights, or the chosen preset's layers.
  values() {
    const n = this.numLayers();
    const preset = this.presetWidget?.value;
    if (preset && preset !== "custom" && this.info) {
      return preset === "all" ? new Array(n).fill(1) : (this.info.groups[preset] ?? new Array(n).fill(1));
    }
    const weights = parseWeights(this.weightsWidget?.value);
    return weights && weights.length === n ? weights : new Array(n).fill(1);
  }

  store(values) {
    const widget = this.weightsWidget;
    if (widget) widget.value = JSON.stringify(values.map((v) => Math.round(v * 100) / 100));
    const preset = this.presetWidget;
    if (preset && preset.value !== "custom") preset.value = "custom";
    this.node.setDirtyCanvas?.(true, true);
    this.draw();
  }

  applyPreset(preset) {
    const n = this.numLayers();
    if (!n) return;
    let values;
    if (preset === "all") values = new Array(n).fill(1);
    else if (preset === "none") values = new Array(n).fill(0);
    else values = this.info?.groups?.[preset] ?? new Array(n).fill(1);
    this.store([...values]);
  }

  onPointer(event, start) {
    const n = this.numLayers();
    if (!n) return;
    event.preventDefault();
    event.stopPropagation();
    if (start) {
      this.dragging = true;
      this.canvas.setPointerCapture?.(event.pointerId);
    }
    const rect = this.canvas.getBoundingClientRect();
    const index = Math.min(n - 1, Math.max(0, Math.floor(((event.clientX - rect.left) / rect.width) * n)));
    const plot = rect.height - 16; // bottom strip holds the group labels
    const value = Math.min(1, Math.max(0, 1 - (event.clientY - rect.top) / plot));
    const values = this.values();
    values[index] = Math.round(value * 20) / 20; // steps of 0.05
    this.store(values);
  }

  async refresh() {
    const name = upstreamGeneratorName(this.node);
    if (name === this.infoName) return;
    this.infoName = name;
    if (!name) {
      this.info = null;
      this.message = "connect Load StyleGAN (SGIM) to 'generator'";
      this.draw();
      return;
    }
    this.message = `reading ${name}...`;
    this.draw();
    try {
      const response = await api.fetchApi(`/sgim/generator_info?name=${encodeURIComponent(name)}`);
      const data = await response.json();
      if (name !== this.infoName) return; // a newer request is under way
      if (!response.ok || data.error) {
        this.info = null;
        this.message = data.error ?? `generator info failed (${response.status})`;
      } else {
        this.info = data;
        this.message = "";
      }
    } catch (error) {
      this.info = null;
      this.message = `generator info failed: ${error}`;
    }
    this.draw();
  }

  draw() {
    const canvas = this.canvas;
    const width = Math.max(50, Math.round(canvas.clientWidth || 300));
    const height = Math.max(40, Math.round(canvas.clientHeight || EDITOR_HEIGHT - 30));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const ctx = canvas.getContext("2d");
    if (!ctx) return;
    ctx.clearRect(0, 0, width, height);
    ctx.fillStyle = "#1e1e1e";
    ctx.fillRect(0, 0, width, height);
    const n = this.numLayers();
    ctx.font = "10px sans-serif";
    if (!n) {
      ctx.fillStyle = "#bbb";
      wrapText(ctx, this.message || "no layers", 6, 14, width - 12, 13);
      return;
    }
    const plot = height - 16;
    const barWidth = width / n;
    const values = this.values();
    for (let i = 0; i < n; i++) {
      const group = this.groupOf(i);
      const h = values[i] * (plot - 4);
      ctx.fillStyle = values[i] > 0 ? GROUP_COLOURS[group] : "#555";
      ctx.fillRect(i * barWidth + 1, plot - h, Math.max(1, barWidth - 2), h);
      ctx.fillStyle = "#888";
      ctx.fillRect(i * barWidth + 1, plot - 1, Math.max(1, barWidth - 2), 1);
    }
    // group labels under the bars
    let start = 0;
    for (let i = 1; i <= n; i++) {
      if (i === n || this.groupOf(i) !== this.groupOf(start)) {
        const group = this.groupOf(start);
        ctx.fillStyle = GROUP_COLOURS[group];
        ctx.fillText(group, start * barWidth + 2, height - 4);
        start = i;
      }
    }
    if (this.message) {
      ctx.fillStyle = "#f88";
      wrapText(ctx, this.message, 4, 11, width - 8, 12);
    }
  }
}

function setUpLayerMask(node) {
  const weights = findWidget(node, "weights");
  if (weights) weights.hidden = true; // edited through the bars; still saved and sent
  const editor = new LayerMaskEditor(node);
  node.sgimLayerEditor = editor;
  const widget = node.addDOMWidget("layer_editor", "sgim_layer_editor", editor.element, {
    serialize: false,
    getMinHeight: () => EDITOR_HEIGHT,
    getHeight: () => EDITOR_HEIGHT,
  });
  widget.serialize = false;
  const preset = findWidget(node, "preset");
  if (preset) {
    const callback = preset.callback;
    preset.callback = function (...args) {
      const result = callback?.apply(this, args);
      editor.draw();
      return result;
    };
  }
  const onConnectionsChange = node.onConnectionsChange;
  node.onConnectionsChange = function (...args) {
    const result = onConnectionsChange?.apply(this, args);
    editor.refresh();
    return result;
  };
  // The loader's combo can change without any event on this node: check cheaply on redraw.
  const onDrawForeground = node.onDrawForeground;
  node.onDrawForeground = function (...args) {
    const result = onDrawForeground?.apply(this, args);
    if (upstreamGeneratorName(this) !== editor.infoName) editor.refresh();
    return result;
  };
  requestAnimationFrame(() => editor.refresh());
}

function setUpLossReadout(node) {
  const element = document.createElement("div");
  element.className = "sgim-loss-readout";
  Object.assign(element.style, {
    fontFamily: "monospace", fontSize: "11px", whiteSpace: "pre", color: "#ddd",
    background: "#1e1e1e", padding: "4px", overflow: "hidden", width: "100%",
  });
  element.textContent = "loss terms appear here while it runs";
  const widget = node.addDOMWidget("loss_readout", "sgim_loss_readout", element, {
    serialize: false,
    getMinHeight: () => 84,
    getHeight: () => 84,
  });
  widget.serialize = false;
  node.sgimLossReadout = element;
}

function onLoss(event) {
  const data = event.detail;
  if (!data || data.node == null) return;
  const node = app.graph?.getNodeById?.(Number(data.node)) ?? app.graph?.getNodeById?.(data.node);
  const element = node?.sgimLossReadout;
  if (!element) return;
  const terms = Object.entries(data.terms ?? {})
    .map(([name, value]) => `${name.padEnd(10)} ${Number(value).toFixed(4)}`)
    .join("\n");
  element.textContent = `step ${data.step}/${data.total}\n${terms}`;
}

app.registerExtension({
  name: "sgim.nodes",
  setup() {
    api.addEventListener(LOSS_EVENT, onLoss);
  },
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "SGIMLayerMask" && nodeData.name !== "SGIMOptimizeLatent") return;
    const setUp = nodeData.name === "SGIMLayerMask" ? setUpLayerMask : setUpLossReadout;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function (...args) {
      const result = onNodeCreated?.apply(this, args);
      setUp(this);
      return result;
    };
  },
});
