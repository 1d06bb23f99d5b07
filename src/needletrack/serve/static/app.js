// needletrack web page: plain JS, no build step, nothing loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  info: null, job: null, img: null, p0: null, p1: null, drag: false, pending: null,
  rows: [], polling: null, fps: 25, cursor: null,
};

// ------------------------------------------------------------------------------------------------ helpers
function setMsg(el, text, kind) {
  el.textContent = text || "";
  el.className = "msg" + (kind ? " " + kind : "");
}

async function api(path, opts) {
  const r = await fetch(path, opts);
  let body = null;
  const ct = r.headers.get("content-type") || "";
  if (ct.includes("json")) body = await r.json();
  if (!r.ok) {
    const detail = body && body.detail ? (typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail))
      : `HTTP ${r.status}`;
    throw new Error(detail);
  }
  return body;
}

function fmt(v, nd) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  return typeof v === "number" ? v.toFixed(nd === undefined ? 2 : nd) : String(v);
}

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// ------------------------------------------------------------------------------------------------ startup
async function init() {
  try {
    state.info = await api("/api/info");
    const m = state.info.model || {};
    $("model").textContent = "model " + (m.label || "?") + (m.input_size ? ` · ${m.input_size.join("×")}` : "") +
      (m.engine ? ` · ${m.engine}` : "");
    $("version").textContent = "needletrack " + state.info.needletrack_version;
    const lim = state.info.limits;
    $("limits").textContent = `${state.info.accepted} · up to ${lim.max_upload_mb} MB, ${lim.max_frames} frames`;
    if (state.info.model_warning) {
      $("model-warning").textContent = "Warning: " + state.info.model_warning;
      $("model-warning").hidden = false;
    }
  } catch (e) {
    setMsg($("load-msg"), "cannot reach the server: " + e.message, "error");
  }
  const drop = $("drop");
  drop.addEventListener("click", (ev) => { if (ev.target.tagName !== "LABEL" && ev.target.tagName !== "INPUT") $("file").click(); });
  drop.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); $("file").click(); } });
  drop.addEventListener("dragover", (ev) => { ev.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (ev) => {
    ev.preventDefault(); drop.classList.remove("over");
    if (ev.dataTransfer.files.length) upload(ev.dataTransfer.files[0]);
  });
  $("file").addEventListener("change", () => { if ($("file").files.length) upload($("file").files[0]); });
  $("sample").addEventListener("click", useSample);
  $("clear").addEventListener("click", () => { state.p0 = state.p1 = state.pending = null; syncInputs(); draw(); });
  $("suggest").addEventListener("click", () => {
    const s = state.job && state.job.suggested_line;
    if (s) { state.p0 = { x: s[0], y: s[1] }; state.p1 = { x: s[2], y: s[3] }; syncInputs(); draw(); }
  });
  for (const id of ["x0", "y0", "x1", "y1"]) $(id).addEventListener("input", fromInputs);
  for (const r of document.querySelectorAll("input[name=mode]")) r.addEventListener("change", modeChanged);
  $("track").addEventListener("click", startTracking);
  $("cancel").addEventListener("click", cancelJob);
  setupCanvas();
  setupPlot();
  restoreFromHash();
}

// a job's page survives a reload (and can be reopened from its address) while the server keeps the job
async function restoreFromHash() {
  const m = /job=([A-Za-z0-9_-]{16,64})/.exec(location.hash);
  if (!m) return;
  let job;
  try { job = await api(`/api/jobs/${m[1]}`); } catch (e) { setMsg($("load-msg"), e.message, "error"); return; }
  const p = job.prompt;
  if (p && p.mode) {
    const r = document.querySelector(`input[name=mode][value=${p.mode}]`);
    if (r) r.checked = true;
    if (p.mode === "line") { state.p0 = { x: p.line[0], y: p.line[1] }; state.p1 = { x: p.line[2], y: p.line[3] }; }
  }
  jobLoaded(job, true);
  if (job.status !== "ready") {
    $("step-run").hidden = false;
    $("cancel").hidden = !["queued", "running"].includes(job.status);
    showProgress(job);
    stopPolling();
    state.polling = setInterval(poll, 500);
  }
}

// ------------------------------------------------------------------------------------------------ step 1
function resetForNewJob() {
  stopPolling();
  state.job = null; state.p0 = state.p1 = state.pending = null; state.rows = [];
  $("step-prompt").hidden = true; $("step-run").hidden = true; $("step-results").hidden = true;
  $("cine-info").hidden = true;
  $("video").removeAttribute("src"); $("video").load();
}

function upload(file) {
  resetForNewJob();
  const lim = state.info ? state.info.limits.max_upload_mb : null;
  if (lim && file.size > lim * 1024 * 1024) {
    setMsg($("load-msg"), `${file.name}: ${(file.size / 1048576).toFixed(1)} MB is over the ${lim} MB limit`, "error");
    return;
  }
  setMsg($("load-msg"), `uploading ${file.name} …`);
  const bar = $("upload-progress");
  bar.hidden = false; bar.firstElementChild.style.width = "0%";
  const fd = new FormData();
  fd.append("file", file, file.name);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/jobs");
  xhr.responseType = "json";
  xhr.upload.onprogress = (ev) => {
    if (ev.lengthComputable) bar.firstElementChild.style.width = (100 * ev.loaded / ev.total).toFixed(1) + "%";
    if (ev.loaded === ev.total) setMsg($("load-msg"), `checking ${file.name} …`);
  };
  xhr.onload = () => {
    bar.hidden = true;
    if (xhr.status === 201) { jobLoaded(xhr.response); }
    else {
      const d = xhr.response && xhr.response.detail;
      setMsg($("load-msg"), (typeof d === "string" ? d : `upload failed (HTTP ${xhr.status})`), "error");
    }
    $("file").value = "";
  };
  xhr.onerror = () => { bar.hidden = true; setMsg($("load-msg"), "upload failed: connection error", "error"); };
  xhr.send(fd);
}

async function useSample() {
  resetForNewJob();
  setMsg($("load-msg"), "simulating a needle insertion …");
  $("sample").disabled = true;
  try {
    jobLoaded(await api("/api/jobs/sample", { method: "POST", headers: { "content-type": "application/json" }, body: "{}" }));
  } catch (e) {
    setMsg($("load-msg"), e.message, "error");
  } finally {
    $("sample").disabled = false;
  }
}

function jobLoaded(job, keepPrompt) {
  state.job = job;
  if (!keepPrompt) { state.p0 = state.p1 = state.pending = null; }
  history.replaceState(null, "", "#job=" + job.id);
  const i = job.info;
  setMsg($("load-msg"), `loaded ${job.name}`, "ok");
  const dl = $("cine-info");
  dl.replaceChildren();
  const items = [["file", job.name], ["format", i.format], ["size", `${i.width} × ${i.height} px`],
    ["frames", i.frames === null ? "unknown" : String(i.frames)], ["frame rate", i.fps ? `${fmt(i.fps, 2)} fps` : "not given"]];
  if (i.pixel_spacing_mm) items.push(["pixel spacing", `${fmt(i.pixel_spacing_mm[0], 3)} × ${fmt(i.pixel_spacing_mm[1], 3)} mm`]);
  for (const n of (i.notes || []).concat(job.notes || [])) items.push(["note", n]);
  for (const [k, v] of items) { dl.append(el("dt", {}, k), el("dd", {}, v)); }
  dl.hidden = false;
  state.fps = i.fps || 25;
  $("truth-opt").hidden = job.kind !== "sample";
  $("suggest").hidden = !job.suggested_line;
  if (job.kind !== "sample" && document.querySelector("input[name=mode]:checked").value === "truth") {
    document.querySelector("input[name=mode][value=line]").checked = true;
  }
  const img = new Image();
  img.onload = () => {
    state.img = img;
    const c = $("frame");
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    for (const id of ["x0", "x1"]) $(id).max = img.naturalWidth - 1;
    for (const id of ["y0", "y1"]) $(id).max = img.naturalHeight - 1;
    $("step-prompt").hidden = false;
    fitCanvas();
    syncInputs(); modeChanged(); draw();
  };
  img.onerror = () => setMsg($("load-msg"), "could not show the first frame", "error");
  img.src = `/api/jobs/${job.id}/frame0.png?t=${Date.now()}`;
}

// ------------------------------------------------------------------------------------------------ step 2
// show the frame as large as the card allows (small frames scaled up, tall ones kept on screen)
function fitCanvas() {
  const c = $("frame"), wrap = c.parentElement;
  if (!state.img) return;
  const w = state.img.naturalWidth, h = state.img.naturalHeight;
  const s = Math.min(wrap.clientWidth / w, 0.7 * window.innerHeight / h);
  c.style.width = Math.floor(w * s) + "px";
  c.style.height = Math.floor(h * s) + "px";
}
window.addEventListener("resize", fitCanvas);

function mode() { return document.querySelector("input[name=mode]:checked").value; }

function modeChanged() {
  const m = mode();
  $("frame").classList.toggle("disabled", m !== "line");
  $("coords").hidden = m !== "line";
  $("hint").textContent = m === "line" ? "Drag along the visible shaft, or click its two ends."
    : m === "auto" ? "The tracker looks for a straight bright line in each frame until it finds the needle."
    : "The simulator's exact needle mask of frame 0 starts the tracker (the best case).";
  updateTrackButton(); draw();
}

function updateTrackButton() {
  const ok = state.job && (mode() !== "line" || (state.p0 && state.p1 && dist(state.p0, state.p1) >= 3));
  $("track").disabled = !ok;
  setMsg($("prompt-msg"), mode() === "line" && !(state.p0 && state.p1) ? "draw the needle first" : "");
}

function dist(a, b) { return Math.hypot(a.x - b.x, a.y - b.y); }

function toImage(ev) {
  const c = $("frame"), r = c.getBoundingClientRect();
  const x = (ev.clientX - r.left) * (c.width / r.width), y = (ev.clientY - r.top) * (c.height / r.height);
  return { x: Math.min(Math.max(x, 0), c.width - 1), y: Math.min(Math.max(y, 0), c.height - 1) };
}

function setupCanvas() {
  const c = $("frame");
  c.addEventListener("pointerdown", (ev) => {
    if (mode() !== "line" || !state.img) return;
    c.setPointerCapture(ev.pointerId);
    const p = toImage(ev);
    if (state.pending) {            // second click of a two-click line
      state.p0 = state.pending; state.p1 = p; state.pending = null; state.drag = false;
    } else {
      state.p0 = p; state.p1 = null; state.drag = true; state.downAt = p;
    }
    syncInputs(); draw();
  });
  c.addEventListener("pointermove", (ev) => {
    if (!state.drag) return;
    state.p1 = toImage(ev); syncInputs(); draw();
  });
  c.addEventListener("pointerup", (ev) => {
    if (!state.drag) return;
    state.drag = false;
    const p = toImage(ev);
    const tiny = 4 * c.width / c.getBoundingClientRect().width;
    if (dist(p, state.downAt) < tiny) { state.pending = state.downAt; state.p1 = null; }   // a click: wait for the other end
    else state.p1 = p;
    syncInputs(); draw();
  });
}

function round1(v) { return Math.round(v * 10) / 10; }

function syncInputs() {
  const vals = [state.p0 && state.p0.x, state.p0 && state.p0.y, state.p1 && state.p1.x, state.p1 && state.p1.y];
  ["x0", "y0", "x1", "y1"].forEach((id, k) => { $(id).value = vals[k] === null || vals[k] === undefined ? "" : round1(vals[k]); });
  if (state.pending) { $("x0").value = round1(state.pending.x); $("y0").value = round1(state.pending.y); }
  updateTrackButton();
}

function fromInputs() {
  const v = ["x0", "y0", "x1", "y1"].map((id) => parseFloat($(id).value));
  if (v.every(Number.isFinite)) { state.p0 = { x: v[0], y: v[1] }; state.p1 = { x: v[2], y: v[3] }; state.pending = null; }
  updateTrackButton(); draw();
}

function draw() {
  const c = $("frame"), g = c.getContext("2d");
  if (!state.img) return;
  g.drawImage(state.img, 0, 0);
  if (mode() !== "line") return;
  const lw = Math.max(1, c.width / 256);
  const dot = (p, color) => { g.beginPath(); g.arc(p.x, p.y, 2.5 * lw, 0, 2 * Math.PI); g.fillStyle = color; g.fill(); };
  if (state.pending) dot(state.pending, "rgb(255,220,0)");
  if (state.p0 && state.p1) {
    g.strokeStyle = "rgba(255,220,0,0.95)"; g.lineWidth = lw; g.setLineDash([]);
    g.beginPath(); g.moveTo(state.p0.x, state.p0.y); g.lineTo(state.p1.x, state.p1.y); g.stroke();
    dot(state.p0, "rgb(255,220,0)"); dot(state.p1, "rgb(255,220,0)");
  }
}

// ------------------------------------------------------------------------------------------------ step 3
async function startTracking() {
  const job = state.job;
  if (!job) return;
  const body = { mode: mode() };
  if (body.mode === "line") body.line = [state.p0.x, state.p0.y, state.p1.x, state.p1.y].map(round1);
  $("track").disabled = true;
  try {
    state.job = await api(`/api/jobs/${job.id}/track`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  } catch (e) {
    setMsg($("prompt-msg"), e.message, "error"); updateTrackButton(); return;
  }
  state.rows = [];
  $("table").tBodies[0].replaceChildren();
  $("step-results").hidden = true;
  $("step-run").hidden = false;
  $("cancel").hidden = false;
  setMsg($("run-msg"), "");
  showProgress(state.job);
  stopPolling();
  state.polling = setInterval(poll, 500);
}

function stopPolling() { if (state.polling) { clearInterval(state.polling); state.polling = null; } }

function showProgress(job) {
  const p = job.progress, bar = $("run-progress");
  bar.classList.toggle("indeterminate", job.status === "queued" || (job.status === "running" && !p.total));
  bar.classList.toggle("live", job.status === "running");
  bar.firstElementChild.style.width = job.status === "done" ? "100%"
    : p.fraction !== null ? (100 * p.fraction).toFixed(1) + "%" : "0%";
  const t = job.elapsed_s ? ` · ${job.elapsed_s.toFixed(1)} s` : "";
  const fpsNow = job.elapsed_s && p.done ? ` · ${(p.done / job.elapsed_s).toFixed(1)} frames/s` : "";
  $("run-text").textContent = job.status === "queued" ? "waiting for the tracker (another job is running) …"
    : `${job.status}: frame ${p.done}${p.total ? " / " + p.total : ""}${t}${fpsNow}`;
}

let pollBusy = false;
async function poll() {
  const job = state.job;
  if (!job || pollBusy) return;
  pollBusy = true;
  try {
    const [j, r] = await Promise.all([api(`/api/jobs/${job.id}`), api(`/api/jobs/${job.id}/rows?since=${state.rows.length}`)]);
    if (!state.job || state.job.id !== job.id) return;
    state.job = j;
    if (r.since === state.rows.length) { state.rows.push(...r.rows); addTableRows(r.rows); }
    showProgress(j);
    drawPlot();
    if (!["queued", "running"].includes(j.status)) {
      stopPolling();
      $("cancel").hidden = true;
      updateTrackButton();
      if (j.status === "done") { setMsg($("run-msg"), "done", "ok"); showResults(j); }
      else if (j.status === "failed") setMsg($("run-msg"), j.error || "failed", "error");
      else setMsg($("run-msg"), "cancelled");
    }
  } catch (e) {
    setMsg($("run-msg"), e.message, "error");
    stopPolling();
  } finally {
    pollBusy = false;
  }
}

async function cancelJob() {
  if (!state.job) return;
  try { await api(`/api/jobs/${state.job.id}/cancel`, { method: "POST" }); } catch (e) { setMsg($("run-msg"), e.message, "error"); }
}

// ------------------------------------------------------------------------------------------------ step 4
function figure(k, v) {
  const d = el("div", { class: "fig" });
  d.append(el("div", { class: "v" }, v), el("div", { class: "k" }, k));
  return d;
}

function showResults(job) {
  const s = job.summary || {};
  // the overlay plays at the source rate kept between 10 and 60 fps (needletrack.track.overlay.playback_fps)
  state.fps = Math.min(60, Math.max(10, s.fps || state.fps || 25));
  $("step-results").hidden = false;
  const v = $("video");
  v.poster = `${job.links.frame0}?t=${Date.now()}`;   // the first frame until the video can play
  v.src = `${job.links["overlay.mp4"]}?inline=1&t=${Date.now()}`;
  v.addEventListener("timeupdate", onVideoTime);
  v.play().catch(() => {});
  const f = $("figures");
  f.replaceChildren(
    figure("frames tracked", String(s.frames)),
    figure("needle visible", `${s.visible_frames} / ${s.frames}`),
    figure("first found at frame", s.first_found_frame === null ? "never" : String(s.first_found_frame)),
    figure("ms per frame", fmt(s.ms_per_frame_mean, 1)),
  );
  const m = s.metrics;
  if (m) {
    f.append(figure("IoU vs ground truth", fmt(m.iou, 3)), figure("Dice", fmt(m.dice, 3)),
      figure("tip error px", fmt(m.tip_error_px, 1)), figure("angle error °", fmt(m.angle_error_deg, 1)));
  }
  const d = $("downloads");
  d.replaceChildren();
  const labels = { "masks.zip": "masks (zip of PNGs)", "needle.csv": "needle.csv", "overlay.mp4": "overlay.mp4", "summary.json": "summary.json" };
  for (const [name, label] of Object.entries(labels)) {
    const a = el("a", { href: job.links[name], download: "" }, "⬇ " + label);
    d.append(a);
  }
  const notes = (s.notes || []).concat(job.notes || []).filter((x, i, a) => a.indexOf(x) === i);
  $("notes").textContent = notes.length ? "Notes: " + notes.join("; ") : "";
  drawPlot();
}

function addTableRows(rows) {
  const tb = $("table").tBodies[0];
  const frag = document.createDocumentFragment();
  for (const r of rows) {
    const tr = el("tr", { "data-frame": r.frame });
    if (!r.visible) tr.className = "hidden-needle";
    for (const [v, nd] of [[r.frame, 0], [r.time_s, 3], [r.visible ? "yes" : "no"], [r.score, 3], [r.tip_x, 1],
      [r.tip_y, 1], [r.tail_x, 1], [r.tail_y, 1], [r.angle_deg, 1]]) tr.append(el("td", {}, fmt(v, nd)));
    tr.addEventListener("click", () => seekFrame(r.frame));
    frag.append(tr);
  }
  tb.append(frag);
}

function onVideoTime() {
  const fr = Math.min(state.rows.length - 1, Math.floor($("video").currentTime * state.fps + 1e-3));
  if (fr === state.cursor) return;
  state.cursor = fr;
  drawPlot();
  const tb = $("table").tBodies[0];
  const prev = tb.querySelector("tr.current");
  if (prev) prev.classList.remove("current");
  const row = tb.rows[fr];
  if (row) {
    row.classList.add("current");
    const wrap = row.closest(".table-wrap");
    if (row.offsetTop < wrap.scrollTop + 20 || row.offsetTop > wrap.scrollTop + wrap.clientHeight - 30) {
      wrap.scrollTop = row.offsetTop - wrap.clientHeight / 2;
    }
  }
}

function seekFrame(fr) {
  const v = $("video");
  if (!v.src) return;
  v.pause();
  v.currentTime = (fr + 0.5) / state.fps;
}

// ------------------------------------------------------------------------------------------------ plot
const PLOT = { left: 56, right: 14, top: 8, gap: 22, bottom: 22 };

function setupPlot() {
  $("plot").addEventListener("click", (ev) => {
    const c = $("plot"), r = c.getBoundingClientRect();
    const x = (ev.clientX - r.left) * (c.width / r.width);
    const n = Math.max(1, state.job && state.job.progress.total ? state.job.progress.total : state.rows.length);
    const fr = Math.round((x - PLOT.left) / (c.width - PLOT.left - PLOT.right) * Math.max(1, n - 1));
    if (fr >= 0 && fr < state.rows.length) seekFrame(fr);
  });
}

function drawPlot() {
  const c = $("plot"), g = c.getContext("2d");
  const W = c.width, H = c.height;
  g.clearRect(0, 0, W, H);
  const rows = state.rows;
  const n = Math.max(2, state.job && state.job.progress.total ? state.job.progress.total : rows.length);
  const panels = [
    { label: "tip (px)", series: [["tip_x", "#0b6bcb", "x"], ["tip_y", "#d9480f", "y"]] },
    { label: "angle (°)", series: [["angle_deg", "#2b8a3e", "angle"]] },
    { label: "score", series: [["score", "#7048e8", "score"]], min: 0, max: 1 },
  ];
  const ph = (H - PLOT.top - PLOT.bottom - PLOT.gap * (panels.length - 1)) / panels.length;
  const x0 = PLOT.left, x1 = W - PLOT.right;
  const X = (i) => x0 + (x1 - x0) * i / (n - 1);
  g.font = "11px system-ui, sans-serif";
  panels.forEach((p, k) => {
    const top = PLOT.top + k * (ph + PLOT.gap), bot = top + ph;
    let lo = p.min, hi = p.max;
    if (lo === undefined) {
      const vals = [];
      for (const r of rows) for (const [key] of p.series) if (r[key] !== null && r[key] !== undefined) vals.push(r[key]);
      lo = vals.length ? Math.min(...vals) : 0; hi = vals.length ? Math.max(...vals) : 1;
      if (hi - lo < 1) { lo -= 0.5; hi += 0.5; }
      const pad = (hi - lo) * 0.08; lo -= pad; hi += pad;
    }
    const Y = (v) => bot - (bot - top) * (v - lo) / (hi - lo);
    g.strokeStyle = "#d8dee5"; g.lineWidth = 1; g.strokeRect(x0, top, x1 - x0, ph);
    g.fillStyle = "#5d6b7a"; g.textAlign = "right"; g.textBaseline = "middle";
    g.fillText(fmt(hi, hi - lo < 5 ? 2 : 0), x0 - 4, top + 5); g.fillText(fmt(lo, hi - lo < 5 ? 2 : 0), x0 - 4, bot - 5);
    g.textAlign = "left"; g.textBaseline = "top";
    let lx = x0 + 6;
    g.fillStyle = "#1d2733"; g.fillText(p.label, lx, top + 3); lx += g.measureText(p.label).width + 10;
    for (const [key, color, name] of p.series) {
      if (p.series.length > 1) { g.fillStyle = color; g.fillText(name, lx, top + 3); lx += g.measureText(name).width + 8; }
      g.strokeStyle = color; g.lineWidth = 1.6; g.beginPath();
      let pen = false;
      for (const r of rows) {
        const v = r[key];
        if (v === null || v === undefined || (key !== "score" && !r.visible)) { pen = false; continue; }
        if (pen) g.lineTo(X(r.frame), Y(v)); else g.moveTo(X(r.frame), Y(v));
        pen = true;
      }
      g.stroke();
    }
    // frames without a needle: grey ticks along the bottom
    g.fillStyle = "rgba(150,160,170,0.5)";
    for (const r of rows) if (!r.visible) g.fillRect(X(r.frame) - 1, bot - 4, 2, 4);
  });
  g.fillStyle = "#5d6b7a"; g.textAlign = "center"; g.textBaseline = "bottom";
  g.fillText("frame", (x0 + x1) / 2, H - 2);
  g.textAlign = "left"; g.fillText("0", x0, H - 2); g.textAlign = "right"; g.fillText(String(n - 1), x1, H - 2);
  if (state.cursor !== null && state.cursor >= 0) {
    g.strokeStyle = "rgba(29,39,51,0.6)"; g.lineWidth = 1; g.setLineDash([4, 3]);
    g.beginPath(); g.moveTo(X(state.cursor), PLOT.top); g.lineTo(X(state.cursor), H - PLOT.bottom); g.stroke();
    g.setLineDash([]);
  }
}

document.addEventListener("DOMContentLoaded", init);
