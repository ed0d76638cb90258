// comfyui-sgim frontend: the layer-mask bar editor on "Layer Mask (SGIM)", the loss readout on
// "Optimize Latent (SGIM)", search aliases for the pack's nodes, and a menu entry (Extensions > SGIM)
// opening the live page.
//
// Layer Mask: the node sends two widgets, `preset` and `weights` (a JSON list, one value per W+ layer,
// used when preset is "custom"; hidden here, edited through the bars). The editor always draws what
// those two widgets will make the server build: the preset's layers, or the custom weights. The number
// of layers and their coarse/middle/fine groups come from GET /sgim/generator_info?name=<file>, <file>
// being the generator_name of the Load StyleGAN node wired into `generator`. When that count changes
// (another generator), custom weights are resampled to the new count, stored, and a note says so.
// The editor reacts to widget callbacks and graph events; nothing polls while drawing.
//
// Optimize Latent, Music Keyframes, Project Image: the server sends "sgim.loss" every step ({node, step,
// total, terms, prompt_id}); the readout is the node's only loss display (progress text, where a node sends
// any, says only which keyframe or phase is running). Node ids repeat across workflow tabs, so a message is
// shown only in the tab that queued its prompt (prompt ids are recorded as this page queues them); a message
// without prompt_id (older servers) goes by node id.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const LOSS_EVENT = "sgim.loss";
const GROUP_COLOURS = { coarse: "#5b8def", middle: "#3fb27f", fine: "#e0a13a" };
const EDITOR_HEIGHT = 150;
const BUTTONS_HEIGHT = 30;
const LABEL_STRIP = 16;
const READOUT_LINE = 15;
const READOUT_LINES = 5; // "step N/M" + total, clip, similarity, identity

const layerEditors = new Set(); // every live Layer Mask editor, in any (sub)graph
const lossReadouts = new Set();

function findWidget(node, name) {
  return node.widgets?.find((w) => w.name === name);
}

function classOf(node) {
  return node?.comfyClass ?? node?.type;
}

// A node from the id the server uses while running a prompt: "12" at the top level, "12:5" for
// node 5 inside the subgraph node 12 (deeper nesting adds more ids).
export function nodeForExecutionId(id) {
  if (id == null) return null;
  let graph = app.rootGraph ?? app.graph;
  let node = null;
  for (const part of String(id).split(":")) {
    node = graph?.getNodeById?.(Number(part)) ?? graph?.getNodeById?.(part) ?? null;
    if (!node) return null;
    graph = node.subgraph;
  }
  return node;
}

// Messages name files, never absolute paths (they are long and tell the user nothing new).
function shortPaths(text) {
  return String(text).replace(/(?:[A-Za-z]:)?[\\/](?:[^\s'"\\/]+[\\/])+([^\s'"\\/]+)/g, "$1");
}

// generator_name of the loader feeding `generator` (following reroutes and pass-through nodes).
// A node outside any graph (the frontend's clipboard copy) has no links to follow: null, never a throw
// (newer frontends throw NullGraphError from getInputNode there).
function upstreamGeneratorName(node) {
  let current = node;
  for (let hop = 0; hop < 8 && current; hop++) {
    if (!current.graph) return null;
    const slot = current.inputs?.findIndex((i) => i.name === "generator" || i.type === "SGIM_STYLEGAN");
    const source = current.getInputNode?.(slot >= 0 ? slot : 0);
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
    return Array.isArray(values) && values.length && values.every((v) => typeof v === "number" && v >= 0 && v <= 1)
      ? values
      : null;
  } catch {
    return null;
  }
}

// `values` resampled to `count` layers (each new layer takes the value at its relative position).
function resample(values, count) {
  if (values.length === count) return [...values];
  return Array.from({ length: count }, (_, i) => {
    const x = count === 1 ? 0 : (i * (values.length - 1)) / (count - 1);
    const lo = Math.floor(x);
    const hi = Math.min(values.length - 1, lo + 1);
    return Math.round((values[lo] + (values[hi] - values[lo]) * (x - lo)) * 100) / 100;
  });
}

function wrapWords(ctx, text, maxWidth) {
  const lines = [];
  let line = "";
  for (const word of String(text).split(/\s+/)) {
    const candidate = line ? `${line} ${word}` : word;
    if (line && ctx.measureText(candidate).width > maxWidth) {
      lines.push(line);
      line = word;
    } else {
      line = candidate;
    }
  }
  if (line) lines.push(line);
  return lines;
}

const infoCache = new Map(); // generator file name -> Promise of its /sgim/generator_info answer

function generatorInfo(name) {
  if (!infoCache.has(name)) {
    const request = api
      .fetchApi(`/sgim/generator_info?name=${encodeURIComponent(name)}`)
      .then(async (response) => {
        const data = await response.json().catch(() => ({}));
        if (!response.ok || data.error) return { error: shortPaths(data.error ?? `generator info failed (HTTP ${response.status})`) };
        return data;
      })
      .catch((error) => ({ error: `generator info failed: ${error}` }));
    request.then((data) => data.error && infoCache.delete(name)); // retry errors next time (file may appear)
    infoCache.set(name, request);
  }
  return infoCache.get(name);
}

class LayerMaskEditor {
  constructor(node) {
    this.node = node;
    this.info = null; // {num_ws, groups: {coarse: [..], middle: [..], fine: [..]}}
    this.infoName = undefined;
    this.message = "connect Load StyleGAN (SGIM) to 'generator'";
    this.note = ""; // e.g. "weights resampled from 8 to 6 layers"
    this.drawn = null; // the values of the last bars drawn (null: a message was drawn instead)
    this.warning = ""; // e.g. a preset that frees no layer: said at once, not only when the graph runs
    this.barsTop = 0; // y where the bars' full height starts (below the note and warning lines)
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
    Object.assign(this.canvas.style, { width: "100%", height: `${EDITOR_HEIGHT - BUTTONS_HEIGHT}px`, cursor: "ns-resize" });
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

  groupOf(index) {
    for (const [group, values] of Object.entries(this.info?.groups ?? {})) {
      if (values[index] > 0) return group;
    }
    return "fine";
  }

  // The per-layer freedom the server will build from the widgets (null when it cannot be known).
  sentValues() {
    if (!this.info) return null;
    const n = this.info.num_ws;
    const preset = this.presetWidget?.value ?? "all";
    if (preset === "all") return new Array(n).fill(1);
    if (preset !== "custom") return this.info.groups?.[preset] ? [...this.info.groups[preset]] : null;
    const weights = parseWeights(this.weightsWidget?.value);
    return weights && weights.length === n ? weights : null;
  }

  storeWeights(values, note = "") {
    const widget = this.weightsWidget;
    if (widget) widget.value = JSON.stringify(values.map((v) => Math.round(v * 100) / 100));
    const preset = this.presetWidget;
    if (preset && preset.value !== "custom") preset.value = "custom";
    this.note = note;
    this.node.setDirtyCanvas?.(true, true);
  }

  // Custom weights that do not fit the generator are made to fit, visibly (drawn = sent).
  reconcile() {
    if (!this.info || this.presetWidget?.value !== "custom") return;
    const n = this.info.num_ws;
    const weights = parseWeights(this.weightsWidget?.value);
    if (weights && weights.length === n) return;
    if (weights) this.storeWeights(resample(weights, n), `weights resampled from ${weights.length} to ${n} layers for ${this.infoName}`);
    else this.storeWeights(new Array(n).fill(1), `custom weights started at 1 for the ${n} layers`);
  }

  applyPreset(preset) {
    if (!this.info) return;
    const n = this.info.num_ws;
    const values = preset === "all" ? new Array(n).fill(1) : preset === "none" ? new Array(n).fill(0)
      : this.info.groups?.[preset] ?? new Array(n).fill(1);
    this.storeWeights([...values]);
    this.draw();
  }

  onPointer(event, start) {
    const values = this.sentValues();
    if (!values) return;
    event.preventDefault();
    event.stopPropagation();
    if (start) {
      this.dragging = true;
      this.canvas.setPointerCapture?.(event.pointerId);
    }
    const rect = this.canvas.getBoundingClientRect();
    const n = values.length;
    const index = Math.min(n - 1, Math.max(0, Math.floor(((event.clientX - rect.left) / rect.width) * n)));
    const scale = rect.height / (this.canvas.height || rect.height); // CSS px per canvas px
    const top = this.barsTop * scale, bottom = rect.height - LABEL_STRIP * scale;
    const value = Math.min(1, Math.max(0, (bottom - (event.clientY - rect.top)) / Math.max(1, bottom - top)));
    values[index] = Math.round(value * 20) / 20; // steps of 0.05
    this.storeWeights(values);
    this.draw();
  }

  // Called on every event that can change what the node sends: its widgets, its links, the upstream loader.
  async refresh() {
    if (!this.node.graph) return; // a clipboard copy or a removed node: nothing to show or send
    const name = upstreamGeneratorName(this.node);
    if (name !== this.infoName) {
      this.infoName = name;
      this.info = null;
      this.note = "";
      if (!name) {
        this.message = "connect Load StyleGAN (SGIM) to 'generator'";
      } else {
        this.message = `reading ${name}...`;
        this.draw();
        const data = await generatorInfo(name);
        if (name !== this.infoName) return; // a newer generator was chosen meanwhile
        this.info = data.error ? null : data;
        this.message = data.error ?? "";
      }
    }
    if (this.presetWidget?.value !== "custom") this.note = ""; // the resampling note concerns custom weights only
    this.reconcile();
    this.draw();
  }

  draw() {
    const canvas = this.canvas;
    const width = Math.max(50, Math.round(canvas.clientWidth || 300));
    const height = Math.max(40, Math.round(canvas.clientHeight || EDITOR_HEIGHT - BUTTONS_HEIGHT));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const ctx = canvas.getContext("2d");
    if (!ctx) return;
    ctx.fillStyle = "#1e1e1e";
    ctx.fillRect(0, 0, width, height);
    ctx.font = "11px sans-serif";
    const values = this.sentValues();
    if (!values) { // an error or a state without layers: the message alone, never stale bars under it
      this.drawn = null;
      const text = this.message || `weights do not fit ${this.infoName}: pick a preset`;
      ctx.fillStyle = this.message.startsWith("reading") || !this.infoName ? "#bbb" : "#f88";
      wrapWords(ctx, text, width - 12).forEach((line, i) => ctx.fillText(line, 6, 15 + i * 14));
      return;
    }
    this.drawn = [...values];
    const preset = this.presetWidget?.value ?? "all";
    this.warning = values.some((v) => v > 0) ? ""
      : `${preset === "custom" ? "these weights free" : `preset '${preset}' frees`} no layer of ${this.infoName}: ` +
        "the edit would change nothing (Run stops with an error). Pick another preset or drag a bar up.";
    // Note and warning lines get their own strip above the bars, so they never cover a bar's top.
    const lines = [...wrapWords(ctx, this.note, width - 12).map((text) => ["#ffd27a", text]),
      ...wrapWords(ctx, this.warning, width - 12).map((text) => ["#f88", text])];
    this.barsTop = lines.length ? 6 + lines.length * 14 : 4;
    lines.forEach(([colour, text], i) => {
      ctx.fillStyle = colour;
      ctx.fillText(text, 6, 14 + i * 14);
    });
    const plot = height - LABEL_STRIP;
    const n = values.length;
    const barWidth = width / n;
    for (let i = 0; i < n; i++) {
      const h = values[i] * Math.max(1, plot - this.barsTop);
      ctx.fillStyle = values[i] > 0 ? GROUP_COLOURS[this.groupOf(i)] : "#555";
      ctx.fillRect(i * barWidth + 1, plot - h, Math.max(1, barWidth - 2), h);
      ctx.fillStyle = "#888";
      ctx.fillRect(i * barWidth + 1, plot - 1, Math.max(1, barWidth - 2), 1);
    }
    let start = 0; // group labels under the bars
    for (let i = 1; i <= n; i++) {
      if (i === n || this.groupOf(i) !== this.groupOf(start)) {
        ctx.fillStyle = GROUP_COLOURS[this.groupOf(start)];
        ctx.fillText(this.groupOf(start), start * barWidth + 2, height - 4);
        start = i;
      }
    }
  }
}

function chainCallback(target, name, after) {
  const before = target[name];
  target[name] = function (...args) {
    const result = before?.apply(this, args);
    after.apply(this, args);
    return result;
  };
}

function setUpLayerMask(node) {
  const weights = findWidget(node, "weights");
  if (weights) weights.hidden = true; // edited through the bars; still saved and sent
  const editor = new LayerMaskEditor(node);
  node.sgimLayerEditor = editor;
  // Registered while the node is in a graph only: copying a node makes clones that are never added
  // (and never removed), which would otherwise stay registered and refresh forever.
  if (node.graph) layerEditors.add(editor);
  chainCallback(node, "onAdded", () => layerEditors.add(editor));
  const widget = node.addDOMWidget("layer_editor", "sgim_layer_editor", editor.element, {
    serialize: false,
    getMinHeight: () => EDITOR_HEIGHT,
    getHeight: () => EDITOR_HEIGHT,
  });
  widget.serialize = false;
  for (const name of ["preset", "weights"]) {
    const w = findWidget(node, name);
    if (w) chainCallback(w, "callback", () => editor.refresh());
  }
  chainCallback(node, "onConnectionsChange", () => editor.refresh());
  chainCallback(node, "onRemoved", () => layerEditors.delete(editor));
}

function refreshAllEditors() {
  for (const editor of layerEditors) {
    if (editor.node.graph) editor.refresh();
    else layerEditors.delete(editor);
  }
}

function setUpGeneratorLoader(node) {
  const widget = findWidget(node, "generator_name");
  if (widget) chainCallback(widget, "callback", refreshAllEditors); // masks downstream follow the choice
  chainCallback(node, "onConnectionsChange", refreshAllEditors);
}

function setUpLossReadout(node) {
  const element = document.createElement("div");
  element.className = "sgim-loss-readout";
  Object.assign(element.style, {
    fontFamily: "monospace", fontSize: "11px", lineHeight: `${READOUT_LINE}px`, whiteSpace: "pre",
    color: "#ddd", background: "#1e1e1e", padding: "4px 6px", overflowX: "auto", width: "100%",
    boxSizing: "border-box",
  });
  const readout = { node, element, lines: ["loss terms appear here while it runs"], running: false, step: 0, total: 0 };
  // room for the step line and the optimiser's four terms from the start, so the layout never jumps
  const height = () => 32 + READOUT_LINE * Math.max(READOUT_LINES, readout.lines.length); // + the widget margins
  const widget = node.addDOMWidget("loss_readout", "sgim_loss_readout", element, {
    serialize: false,
    getMinHeight: height,
    getHeight: height,
  });
  widget.serialize = false;
  node.sgimLossReadout = element;
  node.sgimReadout = readout;
  if (node.graph) lossReadouts.add(readout); // as for the editors: clipboard copies are never added
  chainCallback(node, "onAdded", () => lossReadouts.add(readout));
  chainCallback(node, "onRemoved", () => lossReadouts.delete(readout));
  showReadout(readout, readout.lines);
}

// A node saved smaller than its widgets need (older workflows) grows: every line stays visible.
function fitNode(node) {
  const needed = node.computeSize?.();
  if (needed && node.size[1] < needed[1]) node.setSize?.([node.size[0], needed[1]]);
}

function showReadout(readout, lines) {
  readout.lines = lines;
  readout.element.textContent = lines.join("\n");
  fitNode(readout.node);
  readout.node.setDirtyCanvas?.(true, true);
}

const queuedFrom = new Map(); // prompt id -> the workflow tab that queued it (this page's prompts only)

function activeWorkflowKey() {
  const workflow = app.extensionManager?.workflow?.activeWorkflow;
  return workflow?.path ?? workflow?.key ?? null;
}

function recordQueuedPrompts() {
  const queue = api.queuePrompt;
  if (typeof queue !== "function" || queue.sgimWrapped) return;
  const wrapped = async function (...args) {
    const tab = activeWorkflowKey();
    const result = await queue.apply(this, args);
    if (result?.prompt_id) queuedFrom.set(result.prompt_id, tab);
    if (queuedFrom.size > 200) queuedFrom.delete(queuedFrom.keys().next().value); // old runs
    return result;
  };
  wrapped.sgimWrapped = true;
  api.queuePrompt = wrapped;
}

// Whether a message of prompt `promptId` belongs on this page's current tab.
export function isOurPrompt(promptId) {
  if (promptId == null) return true;
  return queuedFrom.has(promptId) && queuedFrom.get(promptId) === activeWorkflowKey();
}

function onLoss(event) {
  const data = event.detail;
  if (!isOurPrompt(data?.prompt_id)) return; // another tab's (or another client's) run
  const readout = nodeForExecutionId(data?.node)?.sgimReadout;
  if (!readout) return;
  const terms = Object.entries(data.terms ?? {});
  const width = Math.max(...terms.map(([name]) => name.length), 4);
  readout.running = data.step < data.total;
  readout.step = data.step;
  readout.total = data.total;
  showReadout(readout, [`step ${data.step}/${data.total}`,
    ...terms.map(([name, value]) => `${name.padEnd(width)}  ${Number(value).toFixed(4)}`)]);
}

function onInterrupted() {
  for (const readout of lossReadouts) {
    if (!readout.running) continue;
    readout.running = false;
    showReadout(readout, [`cancelled at step ${readout.step}/${readout.total}`, ...readout.lines.slice(1)]);
  }
}

function onExecutionStart() {
  for (const readout of lossReadouts) readout.running = false;
}

const SETUP = {
  SGIMLayerMask: setUpLayerMask,
  SGIMOptimizeLatent: setUpLossReadout,
  SGIMMusicKeyframes: setUpLossReadout,
  SGIMProjectImage: setUpLossReadout,
  SGIMLoadStyleGAN: setUpGeneratorLoader,
};

// The live page (/sgim/live/, served by the pack: comfy_nodes/live.py) opens in its own tab.
export function openLivePage() {
  return window.open(`${api.api_base ?? ""}/sgim/live/`, "_blank");
}

app.registerExtension({
  name: "sgim.nodes",
  commands: [{ id: "sgim.openLive", label: "SGIM Live (picture follows the microphone)", icon: "pi pi-microphone",
               function: openLivePage }],
  menuCommands: [{ path: ["Extensions", "SGIM"], commands: ["sgim.openLive"] }],
  setup() {
    recordQueuedPrompts();
    api.addEventListener(LOSS_EVENT, onLoss);
    api.addEventListener("execution_interrupted", onInterrupted);
    api.addEventListener("execution_start", onExecutionStart);
  },
  // Search aliases ("sound", "audio", ...) for servers that do not send SEARCH_ALIASES themselves.
  async addCustomNodeDefs(defs) {
    const ours = Object.keys(defs).filter((name) => name.startsWith("SGIM") && !defs[name].search_aliases);
    if (!ours.length) return;
    try {
      const aliases = await (await api.fetchApi("/sgim/search_aliases")).json();
      for (const name of ours) if (aliases[name]) defs[name].search_aliases = aliases[name];
    } catch (error) {
      console.warn("sgim: search aliases unavailable", error);
    }
  },
  nodeCreated(node) {
    SETUP[classOf(node)]?.(node);
  },
  // After a workflow is loaded (widget values are set after nodeCreated): bring every editor up to date.
  loadedGraphNode(node) {
    if (classOf(node) === "SGIMLayerMask") node.sgimLayerEditor?.refresh();
    if (node.sgimReadout) fitNode(node);
  },
  afterConfigureGraph() {
    refreshAllEditors();
  },
});
