// SGIM Live page: captures audio (microphone or a file played here), streams it over a websocket,
// shows the frames that come back and acknowledges each one (the server never has more than a few
// frames in flight, so a slow page gets fewer frames, never older ones).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const token = new URLSearchParams(location.search).get("token");
  const withToken = (url) => (token ? `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : url);
  const KNOBS = ["reactivity", "alpha", "beta", "prompt", "prompt_weight", "layers", "size"];
  // What tests and curious users can read: frames shown, a log of their headers, messages received.
  const state = (window.sgimLive = { frames: 0, log: [], messages: [], recordings: [], running: false,
                                     ready: null, ended: null, lastLatency: null, sessions: 0 });
  let ws = null, context = null, sourceNode = null, stream = null, shownUrl = null, recording = false;
  const shownAt = [];

  const say = (text) => { $("message").textContent = text || ""; };

  async function loadInfo() {
    const info = await (await fetch(withToken("info"))).json();
    for (const [id, values] of [["layers", info.layers], ["size", info.sizes]]) {
      $(id).innerHTML = values.map((v) => `<option value="${v}">${v}${id === "size" ? " px" : ""}</option>`).join("");
    }
    for (const name of KNOBS) $(name).value = info.settings[name];
    // Inside ComfyUI the page picks the models from its folders; a standalone server has its own.
    $("choices").innerHTML = Object.entries(info.choices || {}).map(([role, names]) =>
      `<label>${role} <select data-role="${role}">${names.map((n) => `<option>${n}</option>`).join("")}</select></label>`).join("");
    $("model").textContent = info.models.generator || "-";
    showKnobValues();
    if (info.busy) say("another session is running on this server");
  }

  function knobValues() {
    return { reactivity: +$("reactivity").value, alpha: +$("alpha").value, beta: +$("beta").value, prompt: $("prompt").value,
             prompt_weight: +$("prompt_weight").value, layers: $("layers").value, size: +$("size").value };
  }

  function showKnobValues() {
    for (const name of ["reactivity", "alpha", "beta", "prompt_weight"]) $(`${name}-value`).textContent = (+$(name).value).toFixed(2);
  }

  const send = (message) => { if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message)); };

  async function start() {
    $("start").disabled = true;
    say("");
    state.ended = null; state.ready = null;
    try {
      context = new AudioContext();
      await context.audioWorklet.addModule(withToken("static/worklet.js"));
      const capture = new AudioWorkletNode(context, "sgim-capture",
                                           { channelCount: 1, channelCountMode: "explicit", numberOfOutputs: 1 });
      if ($("source").value === "file") {
        const file = $("file").files[0];
        if (!file) throw new Error("choose an audio file first");
        const player = $("player");
        player.src = URL.createObjectURL(file);
        player.hidden = false;
        sourceNode = context.createMediaElementSource(player);
        sourceNode.connect(context.destination); // heard here, and sent
        sourceNode.connect(capture);
        player.onended = () => stop();
        await player.play();
      } else {
        stream = await navigator.mediaDevices.getUserMedia(
          { audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
        sourceNode = context.createMediaStreamSource(stream);
        sourceNode.connect(capture);
      }
      const mute = context.createGain(); // keeps the worklet running without playing the microphone back
      mute.gain.value = 0;
      capture.connect(mute).connect(context.destination);
      const url = new URL(withToken("ws"), location.href);
      url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
      ws = new WebSocket(url);
      ws.binaryType = "arraybuffer";
      const models = Object.fromEntries([...document.querySelectorAll("#choices select")].map((s) => [s.dataset.role, s.value]));
      ws.onopen = () => send({ type: "start", sample_rate: context.sampleRate, settings: knobValues(), models });
      ws.onmessage = (event) => (typeof event.data === "string" ? onText(JSON.parse(event.data)) : onFrame(event.data));
      ws.onclose = (event) => { if (event.reason && !state.ended) state.ended = event.reason; teardown(); };
      capture.port.onmessage = (event) => {
        if (!ws || ws.readyState !== WebSocket.OPEN) return;
        const samples = event.data;
        const buffer = new ArrayBuffer(8 + samples.length * 4);
        new DataView(buffer).setFloat64(0, performance.now(), true);
        new Float32Array(buffer, 8).set(samples);
        ws.send(buffer);
      };
      state.running = true;
      state.sessions += 1;
      $("start").textContent = "Stop";
      $("start").disabled = false;
      $("record").disabled = false;
      $("overlay").textContent = "listening...";
    } catch (error) {
      say(String(error.message || error));
      teardown();
    }
  }

  function stop() {
    if (ws && ws.readyState === WebSocket.OPEN) send({ type: "stop" });
    else teardown();
  }

  function teardown() {
    if (stream) stream.getTracks().forEach((t) => t.stop());
    if (context) context.close().catch(() => {});
    if (!$("player").paused) $("player").pause();
    stream = context = sourceNode = null;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close();
    ws = null;
    state.running = false;
    recording = false;
    $("start").textContent = "Start";
    $("start").disabled = false;
    $("record").disabled = true;
    $("record").textContent = "Record";
    $("record").classList.remove("on");
  }

  function onText(message) {
    state.messages.push(message);
    if (state.messages.length > 200) state.messages.shift();
    if (message.type === "ready") {
      state.ready = message;
      $("model").textContent = message.models.generator || "?";
      $("meaning").textContent = message.meaning;
    } else if (message.type === "error" || message.type === "refused") {
      say(message.message);
    } else if (message.type === "end") {
      state.ended = message.reason;
      if (message.reason !== "stopped") say(message.reason);
      $("overlay").textContent = "press Start";
    } else if (message.type === "recording") {
      recording = true;
      $("record").textContent = "Stop recording";
      $("record").classList.add("on");
    } else if (message.type === "recorded") {
      recording = false;
      state.recordings.push(message);
      $("record").textContent = "Record";
      $("record").classList.remove("on");
      const link = document.createElement("a");
      link.href = withToken(message.url);
      link.textContent = `${message.url.split("/").pop()} (${message.frames} frames, ${message.seconds.toFixed(1)} s)`;
      link.download = "";
      $("recordings").prepend(link, document.createElement("br"));
    }
  }

  function onFrame(buffer) {
    const length = new DataView(buffer).getUint32(0, true);
    const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 4, length)));
    const url = URL.createObjectURL(new Blob([new Uint8Array(buffer, 4 + length)], { type: "image/jpeg" }));
    const image = $("frame");
    image.onload = () => {
      if (shownUrl) URL.revokeObjectURL(shownUrl);
      shownUrl = url;
      const now = performance.now();
      const latency = header.stamp == null ? null : now - header.stamp;
      state.frames += 1;
      state.lastLatency = latency;
      state.log.push({ index: header.index, t: header.t, displacement: header.displacement, drive: header.drive,
                       onset: header.features.onset, meaning: header.meaning, offset: header.offset, latency, shown: now, dropped: header.dropped });
      if (state.log.length > 20000) state.log.shift();
      send({ type: "ack", index: header.index });
      shownAt.push(now);
      while (shownAt.length && shownAt[0] < now - 2000) shownAt.shift();
      $("fps").textContent = (shownAt.length / 2).toFixed(1);
      $("latency").textContent = latency == null ? "-" : `${latency.toFixed(0)} ms`;
      $("dropped").textContent = header.dropped;
      // "instant" once the directions are in (then α moves the picture), "instant (analysing n/N ...)" before
      $("meaning").textContent = header.meaning + (header.meaning === "instant" ? ` · α ${(+$("alpha").value).toFixed(2)}` : "");
      $("nearest").innerHTML = header.nearest.map(([name, sim]) => `<li>${name} <small>${sim.toFixed(2)}</small></li>`).join("");
      $("overlay").textContent = "";
    };
    image.src = url;
  }

  $("start").onclick = () => (state.running ? stop() : start());
  $("record").onclick = () => send({ type: "record", on: !recording });
  $("fullscreen").onclick = () => $("stage").requestFullscreen?.();
  $("source").onchange = () => { if ($("source").value === "file") $("file").click(); };
  $("file").onchange = () => say($("file").files[0] ? `file: ${$("file").files[0].name}` : "");
  for (const name of KNOBS) {
    $(name).addEventListener(["prompt", "layers", "size"].includes(name) ? "change" : "input", () => {
      showKnobValues();
      send({ type: "settings", settings: { [name]: knobValues()[name] } });
    });
  }
  loadInfo().catch((error) => say(`could not reach the server: ${error}`));
})();
