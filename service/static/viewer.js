// The nowcast viewer: jobs, upload, the nowcast on a map, the ensemble at a point.
// Plain browser JavaScript and Leaflet (vendored); every request goes to this service's API with
// the X-API-Key the user entered. Polling uses If-None-Match, so an unchanged job costs a 304.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  key: localStorage.getItem("nowcast-api-key") || "",
  config: null, model: null,
  listTag: null, jobs: [],
  job: null, statusTag: null, status: null, pollTimer: null,
  info: null, product: "mean", threshold: null, lead: 0, playTimer: null,
  layers: {}, maps: null, marker: null,
};

// ------------------------------------------------------------------ API

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.key) headers["X-API-Key"] = state.key;
  const response = await fetch(path, Object.assign({}, options, { headers, cache: "no-store" }));
  if (response.status === 304) return { status: 304, response };
  if (!response.ok) {
    let detail = response.statusText;
    try {
      const body = await response.json();
      detail = formatDetail(body.detail !== undefined ? body.detail : body);
    } catch (err) { /* not JSON */ }
    const error = new Error(`${response.status}: ${detail}`);
    error.status = response.status;
    throw error;
  }
  return { status: response.status, response };
}

function formatDetail(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) return detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  if (detail && detail.message) return detail.message;
  return JSON.stringify(detail);
}

const utc = (iso) => (iso ? iso.replace("T", " ").slice(0, 16) + " UTC" : "–");

// ------------------------------------------------------------------ jobs list

async function refreshJobs() {
  const filter = $("job-filter").value;
  const query = new URLSearchParams({ limit: "20" });
  if (filter) query.set("status", filter);
  try {
    const headers = state.listTag ? { "If-None-Match": state.listTag } : {};
    const { status, response } = await api(`/v1/nowcasts?${query}`, { headers });
    if (status === 304) return;
    state.listTag = response.headers.get("ETag");
    state.jobs = (await response.json()).jobs;
    renderJobs();
  } catch (err) {
    $("job-list").innerHTML = `<li class="muted">${escapeHtml(err.message)}</li>`;
    state.listTag = null;
  }
}

function renderJobs() {
  const list = $("job-list");
  list.innerHTML = "";
  if (!state.jobs.length) list.innerHTML = '<li class="muted">no jobs yet</li>';
  for (const job of state.jobs) {
    const item = document.createElement("li");
    item.dataset.id = job.id;
    item.className = job.id === state.job ? "selected" : "";
    const when = job.forecast_reference_time ? utc(job.forecast_reference_time) : "";
    item.innerHTML = `<span class="state state-${job.status}">${job.status}</span> ` +
      `${escapeHtml(shortSource(job.source))} <span class="muted">${when}</span>`;
    item.title = job.error || job.id;
    item.addEventListener("click", () => selectJob(job.id));
    list.appendChild(item);
  }
}

function shortSource(source) {
  if (!source) return "json";
  return source.replace(/^netcdf:/, "").slice(0, 40);
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

// ------------------------------------------------------------------ one job: status polling

function selectJob(id) {
  if (state.job === id) return;
  stopPlay();
  clearTimeout(state.pollTimer);
  Object.assign(state, { job: id, statusTag: null, status: null, info: null, layers: {}, point: null });
  history.replaceState(null, "", `#${id}`);
  for (const li of $("job-list").children) li.className = li.dataset.id === id ? "selected" : "";
  $("controls").hidden = true;
  $("point").hidden = true;
  $("stale-warning").hidden = true;
  $("maps").hidden = true;
  $("legend").innerHTML = "";
  if (state.maps) {
    state.maps.forEach((m) => m.remove());
    state.maps = null;
  }
  setBanner("queued", `Job ${id}: asking…`);
  pollStatus();
}

function setBanner(status, text) {
  const banner = $("job-banner");
  banner.dataset.status = status;
  banner.textContent = text;
}

async function pollStatus() {
  const id = state.job;
  if (!id) return;
  try {
    const headers = state.statusTag ? { "If-None-Match": state.statusTag } : {};
    const { status, response } = await api(`/v1/nowcasts/${id}`, { headers });
    if (id !== state.job) return;
    if (status !== 304) {
      state.statusTag = response.headers.get("ETag");
      state.status = await response.json();
      showStatus(state.status);
      if (state.status.status === "done" || state.status.status === "failed") {
        state.listTag = null;
        refreshJobs();
      }
      if (state.status.status === "done") {
        await showResult(id);
        return;
      }
      if (state.status.status === "failed") return;
    }
  } catch (err) {
    if (id !== state.job) return;
    setBanner("failed", `Job ${id}: ${err.message}`);
    if (err.status === 404 || err.status === 401) return;
  }
  state.pollTimer = setTimeout(pollStatus, 1000);
}

function showStatus(job) {
  const id = job.id.slice(0, 8);
  if (job.status === "queued") {
    const where = job.queue_position === null || job.queue_position === undefined ? ""
      : job.queue_position === 0 ? ", next to run" : `, ${job.queue_position} ahead`;
    const retry = job.error ? ` (retrying after: ${job.error})` : "";
    setBanner("queued", `Job ${id} queued${where}${retry}`);
  } else if (job.status === "running") {
    setBanner("running", `Job ${id} running for ${Math.round(job.run_seconds || 0)} s (attempt ${job.attempts})`);
  } else if (job.status === "failed") {
    setBanner("failed", `Job ${id} failed: ${job.error || "no message"}`);
  } else if (job.status === "done") {
    setBanner("done", `Job ${id} done in ${(job.run_seconds || 0).toFixed(1)} s by ${job.model_version}`);
  }
}

// ------------------------------------------------------------------ the result on the maps

async function showResult(id) {
  const { response } = await api(`/v1/nowcasts/${id}/map`);
  const info = await response.json();
  if (id !== state.job) return;
  state.info = info;
  state.lead = 0;
  state.threshold = info.thresholds.includes(1) ? 1 : info.thresholds[0];
  const thresholds = $("threshold");
  thresholds.innerHTML = info.thresholds.map((t) => `<option value="${t}">${t}</option>`).join("");
  thresholds.value = String(state.threshold);
  const lead = $("lead");
  lead.max = String(info.lead_minutes.length - 1);
  lead.value = "0";
  $("issue-time").textContent = utc(info.forecast_reference_time);
  $("controls").hidden = false;
  $("threshold-label").hidden = state.product !== "probability";
  const stale = $("stale-warning");
  stale.hidden = !info.stale;
  if (info.stale) {
    stale.textContent = `Old input: the last radar frame is ${formatAge(info.input_age_minutes)} old ` +
      `(more than ${info.stale_minutes} min): this is not a nowcast of now.`;
  }
  $("obs-caption").textContent = `last observation, ${utc(info.forecast_reference_time)}`;
  $("maps").hidden = false;
  setupMaps(info);
  await showObservation();
  await showLead();
  preloadProduct();
  const dims = `${info.shape[0]} x ${info.shape[1]} cells` + (info.cell_km ? ` of ${info.cell_km.toFixed(2)} km` : "");
  $("fc-caption").textContent = `forecast, ${info.members} members, ${dims}` +
    (info.resampled ? ` (${info.resampled})` : "") + (info.georeferenced ? "" : " — no CRS: cell coordinates");
}

function formatAge(minutes) {
  if (minutes === null || minutes === undefined) return "?";
  if (minutes < 120) return `${Math.round(minutes)} min`;
  if (minutes < 2880) return `${Math.round(minutes / 60)} h`;
  return `${Math.round(minutes / 1440)} days`;
}

function setupMaps(info) {
  if (state.maps) {
    state.maps.forEach((m) => m.remove());
    state.maps = null;
  }
  const options = info.georeferenced ? { zoomSnap: 0.25 } : { crs: L.CRS.Simple, minZoom: -5, zoomSnap: 0.25 };
  const maps = ["map-obs", "map-fc"].map((id) => L.map(id, Object.assign({ attributionControl: true }, options)));
  const bounds = L.latLngBounds(info.bounds);
  for (const map of maps) {
    if (info.georeferenced && state.config && state.config.tile_url) {
      L.tileLayer(state.config.tile_url, { attribution: state.config.tile_attribution, maxZoom: 12 }).addTo(map);
    }
    if (info.georeferenced) drawGraticule(map, bounds);
    L.rectangle(bounds, { color: "#556", weight: 1, fill: false, interactive: false }).addTo(map);
    map.fitBounds(bounds);
  }
  // keep the two maps on the same view
  let syncing = false;
  maps.forEach((map, i) => map.on("move", () => {
    if (syncing) return;
    syncing = true;
    maps[1 - i].setView(map.getCenter(), map.getZoom(), { animate: false });
    syncing = false;
  }));
  maps[1].on("click", (event) => showPoint(event.latlng));
  maps[0].on("click", (event) => showPoint(event.latlng));
  state.maps = maps;
  state.overlays = maps.map(() => null);
}

function drawGraticule(map, bounds) {
  const south = bounds.getSouth(), north = bounds.getNorth(), west = bounds.getWest(), east = bounds.getEast();
  const span = Math.max(north - south, east - west);
  const step = span < 3 ? 0.5 : span < 8 ? 1 : span < 20 ? 2 : 5;
  const style = { color: "#666", weight: 0.6, opacity: 0.7, dashArray: "2 4", interactive: false };
  const label = (text) => L.divIcon({ className: "graticule-label", html: text, iconSize: null });
  for (let lat = Math.ceil(south / step) * step; lat <= north; lat += step) {
    L.polyline([[lat, west - 1], [lat, east + 1]], style).addTo(map);
    L.marker([lat, west], { icon: label(`${lat.toFixed(step < 1 ? 1 : 0)}°N`), interactive: false }).addTo(map);
  }
  for (let lon = Math.ceil(west / step) * step; lon <= east; lon += step) {
    L.polyline([[south - 1, lon], [north + 1, lon]], style).addTo(map);
    L.marker([south, lon], { icon: label(`${lon.toFixed(step < 1 ? 1 : 0)}°E`), interactive: false }).addTo(map);
  }
}

function layerKey(product, lead, threshold) {
  return product === "probability" ? `${product}:${lead}:${threshold}` : `${product}:${lead}`;
}

async function layerUrl(product, lead, threshold) {
  const key = layerKey(product, lead, threshold);
  if (!state.layers[key]) {
    const query = new URLSearchParams({ product, lead: String(lead), threshold: String(threshold) });
    state.layers[key] = api(`/v1/nowcasts/${state.job}/overlay?${query}`)
      .then(({ response }) => response.blob())
      .then((blob) => URL.createObjectURL(blob));
  }
  return state.layers[key];
}

async function setOverlay(index, url) {
  const map = state.maps[index];
  const bounds = L.latLngBounds(state.info.bounds);
  if (state.overlays[index]) {
    state.overlays[index].setUrl(url);
  } else {
    state.overlays[index] = L.imageOverlay(url, bounds, { className: "pixelated", interactive: false }).addTo(map);
  }
}

async function showObservation() {
  const info = state.info;
  if (!info.products.includes("observed")) {
    $("obs-caption").textContent = "no observation stored with this result";
    return;
  }
  const url = await layerUrl("observed", info.lead_minutes[0], state.threshold);
  await setOverlay(0, url);
}

async function showLead() {
  const info = state.info;
  if (!info) return;
  const lead = info.lead_minutes[state.lead];
  $("valid-time").textContent = info.valid_times ? utc(info.valid_times[state.lead]) : "–";
  $("lead-time").textContent = `+${lead} min`;
  $("exc-lead").textContent = `P at +${lead} min`;
  const job = state.job;
  const url = await layerUrl(state.product, lead, state.threshold);
  if (job !== state.job) return;
  await setOverlay(1, url);
  renderLegend();
  if (state.point) renderPoint(state.point);
}

function preloadProduct() {
  // fetch every lead of the shown product, one after the other, so playing is smooth
  const info = state.info, product = state.product, threshold = state.threshold, job = state.job;
  info.lead_minutes.reduce((chain, lead) => chain.then(() => {
    if (job !== state.job || product !== state.product) return null;
    return layerUrl(product, lead, threshold).catch(() => null);
  }), Promise.resolve());
}

function renderLegend() {
  const info = state.info;
  const scale = state.product === "probability" ? "probability" : "rain";
  const legend = info.legends[scale];
  const title = scale === "probability" ? `P(rain rate ≥ ${state.threshold} mm/h)` : legend.title;
  const entries = legend.entries.map((e) =>
    `<span><i class="swatch" style="background:${e.colour}"></i>${e.label}</span>`).join("");
  $("legend").innerHTML = `<b>${escapeHtml(title)}</b>${entries}` +
    `<span><i class="swatch transparent"></i>${escapeHtml(legend.transparent)}: transparent</span>` +
    `<span><i class="swatch" style="background:${legend.nodata};opacity:0.5"></i>no data</span>`;
}

// ------------------------------------------------------------------ play

function stopPlay() {
  clearInterval(state.playTimer);
  state.playTimer = null;
  $("play").textContent = "Play";
}

function togglePlay() {
  if (state.playTimer) return stopPlay();
  $("play").textContent = "Pause";
  state.playTimer = setInterval(() => {
    if (!state.info) return stopPlay();
    state.lead = (state.lead + 1) % state.info.lead_minutes.length;
    $("lead").value = String(state.lead);
    showLead();
  }, 700);
}

// ------------------------------------------------------------------ the ensemble at a point

async function showPoint(latlng) {
  if (!state.info) return;
  const query = state.info.georeferenced
    ? new URLSearchParams({ lat: latlng.lat.toFixed(5), lon: latlng.lng.toFixed(5) })
    : new URLSearchParams({ row: String(Math.floor(-latlng.lat)), col: String(Math.floor(latlng.lng)) });
  try {
    const { response } = await api(`/v1/nowcasts/${state.job}/point?${query}`);
    state.point = await response.json();
  } catch (err) {
    $("point").hidden = false;
    $("point-title").textContent = `At the point: ${err.message}`;
    return;
  }
  for (const marker of state.markers || []) marker.remove();
  state.markers = state.maps.map((map) => L.circleMarker(latlng, { radius: 5, color: "#c0392b" }).addTo(map));
  renderPoint(state.point);
}

function renderPoint(point) {
  $("point").hidden = false;
  const where = point.lat !== null ? `${point.lat.toFixed(3)}°N ${point.lon.toFixed(3)}°E` : "";
  $("point-title").textContent = `At ${where} (row ${point.row}, column ${point.col}): ` +
    `${point.members.length} members' rain rate (mm/h)`;
  drawPlume(point);
  const rows = point.thresholds.map((t, k) => {
    const series = point.probability[k];
    const now = series[state.lead];
    const max = Math.max(...series.filter((v) => v !== null), 0);
    const pct = (v) => (v === null || v === undefined ? "no data" : `${Math.round(100 * v)} %`);
    return `<tr><td>≥ ${t} mm/h</td><td>${pct(now)}</td><td>${pct(max)}</td></tr>`;
  });
  $("exceedance").querySelector("tbody").innerHTML = rows.join("");
}

function drawPlume(point) {
  const svg = $("plume");
  const W = 520, H = 240, m = { l: 42, r: 12, t: 12, b: 30 };
  const leads = point.lead_minutes;
  const values = point.members.flat().concat(point.percentiles["90"], [point.observed]).filter((v) => v !== null);
  const top = Math.max(1, ...values) * 1.1;
  const x = (minutes) => m.l + (minutes / leads[leads.length - 1]) * (W - m.l - m.r);
  const y = (v) => H - m.b - (v / top) * (H - m.t - m.b);
  const path = (series) => {
    let d = "";
    series.forEach((v, i) => {
      if (v === null) return;
      d += `${d && series[i - 1] !== null ? "L" : "M"}${x(leads[i]).toFixed(1)},${y(v).toFixed(1)}`;
    });
    return d;
  };
  const p10 = point.percentiles["10"], p90 = point.percentiles["90"];
  let band = "";
  if (p10.every((v) => v !== null) && p90.every((v) => v !== null)) {
    band = `<path class="band" d="${path(p90)}${p10.map((v, i) => [i, v]).reverse()
      .map(([i, v]) => `L${x(leads[i]).toFixed(1)},${y(v).toFixed(1)}`).join("")}Z"/>`;
  }
  const ticks = niceTicks(top);
  const yAxis = ticks.map((v) => `<line class="axis" x1="${m.l - 4}" x2="${m.l}" y1="${y(v)}" y2="${y(v)}"/>` +
    `<text x="${m.l - 6}" y="${y(v) + 3}" text-anchor="end">${v}</text>`).join("");
  const xAxis = leads.filter((_, i) => i % Math.ceil(leads.length / 8) === 0 || i === leads.length - 1)
    .map((l) => `<text x="${x(l)}" y="${H - m.b + 14}" text-anchor="middle">+${l}</text>`).join("");
  const members = point.members.map((s) => `<path class="member" d="${path(s)}"/>`).join("");
  const obs = point.observed === null ? "" : `<circle class="obs" cx="${x(0)}" cy="${y(point.observed)}" r="4"/>`;
  const lead = leads[state.lead];
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.innerHTML = `${band}${members}<path class="mean" d="${path(point.mean)}"/>${obs}` +
    `<line class="now" x1="${x(lead)}" x2="${x(lead)}" y1="${m.t}" y2="${H - m.b}"/>` +
    `<line class="axis" x1="${m.l}" x2="${W - m.r}" y1="${H - m.b}" y2="${H - m.b}"/>` +
    `<line class="axis" x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${H - m.b}"/>${yAxis}${xAxis}` +
    `<text x="${W - m.r}" y="${H - 4}" text-anchor="end">lead time (min); dot: last observation; ` +
    `band: 10-90 %; thick: mean</text>`;
}

function niceTicks(top) {
  const raw = top / 4, power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((f) => f * power).find((s) => s >= raw);
  const ticks = [];
  for (let v = 0; v <= top; v += step) ticks.push(Number(v.toPrecision(3)));
  return ticks;
}

// ------------------------------------------------------------------ upload

async function submitUpload(event) {
  event.preventDefault();
  const files = $("file").files;
  const status = $("submit-status");
  if (!files.length) {
    status.textContent = "Choose one or more radar files first.";
    return;
  }
  const form = new FormData();
  for (const file of files) form.append("file", file, file.name);
  if ($("members").value) form.append("members", $("members").value);
  if ($("thresholds").value.trim()) form.append("thresholds", $("thresholds").value.trim());
  form.append("resample", $("resample").checked ? "true" : "false");
  $("submit").disabled = true;
  status.textContent = `Sending ${files.length} file(s)…`;
  try {
    const { response } = await api("/v1/nowcasts", { method: "POST", body: form });
    const job = await response.json();
    status.textContent = `Queued as job ${job.id.slice(0, 8)}.`;
    state.listTag = null;
    refreshJobs();
    selectJob(job.id);
  } catch (err) {
    status.textContent = `Refused: ${err.message}`;
  } finally {
    $("submit").disabled = false;
  }
}

// ------------------------------------------------------------------ start

async function loadModel() {
  try {
    const { response } = await api("/v1/model");
    const model = await response.json();
    state.model = model;
    $("model-info").textContent = `model ${model.model_version}: ${model.t_in} frames in, ` +
      `${model.t_out} out every ${model.step_minutes.join("/")} min, cells of ${model.cell_km} km`;
    $("members").placeholder = String(model.defaults.members);
  } catch (err) {
    $("model-info").textContent = `model: ${err.message}`;
  }
}

async function start() {
  $("api-key").value = state.key;
  try {
    state.config = await (await fetch("/ui/config.json", { cache: "no-store" })).json();
  } catch (err) {
    state.config = {};
  }
  const needsKey = () => state.config.api_key_required && !state.key;
  if (needsKey()) setBanner("none", "This service needs an API key: enter it above.");
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = $("api-key").value.trim();
    localStorage.setItem("nowcast-api-key", state.key);
    state.listTag = null;
    refreshJobs();
    loadModel();
    if (state.job) { const id = state.job; state.job = null; selectJob(id); }
  });
  $("upload-form").addEventListener("submit", submitUpload);
  $("job-filter").addEventListener("change", () => { state.listTag = null; refreshJobs(); });
  $("product").addEventListener("change", () => {
    state.product = $("product").value;
    $("threshold-label").hidden = state.product !== "probability";
    showLead();
    preloadProduct();
  });
  $("threshold").addEventListener("change", () => {
    state.threshold = Number($("threshold").value);
    showLead();
    preloadProduct();
  });
  $("lead").addEventListener("input", () => {
    state.lead = Number($("lead").value);
    showLead();
  });
  $("play").addEventListener("click", togglePlay);
  window.addEventListener("hashchange", () => { if (location.hash.length > 1) selectJob(location.hash.slice(1)); });
  setInterval(() => { if (!needsKey()) refreshJobs(); }, 3000);
  if (needsKey()) return;  // nothing to ask the API before the key is entered
  await loadModel();
  await refreshJobs();
  if (location.hash.length > 1) selectJob(location.hash.slice(1));
}

start();
