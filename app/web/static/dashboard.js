// Live dashboard: polls GET /api/dashboard every second and redraws.
// No framework, no build step, no third-party code (the machines are offline).
"use strict";

(function () {
  const POLL_MS = 1000;
  const $ = (id) => document.getElementById(id);
  const fmt = new Intl.NumberFormat("en");

  function setText(id, value) {
    const el = $(id);
    const text = String(value);
    if (el.textContent !== text) el.textContent = text;
  }

  function ms(value) {
    if (value === null || value === undefined) return "–";
    return value >= 1000 ? (value / 1000).toFixed(1) + " s" : Math.round(value) + " ms";
  }

  function age(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 60) return seconds.toFixed(0) + " s";
    if (seconds < 3600) return (seconds / 60).toFixed(0) + " min";
    return (seconds / 3600).toFixed(1) + " h";
  }

  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
  }

  function renderTiles(data) {
    const t = data.totals;
    setText("events-per-s", fmt.format(data.events_per_s));
    setText("events-total", fmt.format(data.events_total));
    setText("stores-count", fmt.format(t.stores));
    setText("stores-behind", fmt.format(t.behind));
    setText("gaps", fmt.format(t.missing));
    setText("stores-with-gaps", fmt.format(t.stores_with_gaps));
    setText("duplicates", fmt.format(t.duplicates));
    setText("conflicts", fmt.format(t.conflicts));
    setText("dead-letters", fmt.format(t.dead_letters));
    setText("alerts-count", fmt.format(t.alerts));
    setText("alerts-negative", fmt.format(t.alerts_negative));
    $("gaps").classList.toggle("bad", t.missing > 0);
    $("dead-letters").classList.toggle("bad", t.dead_letters > 0);
    $("alerts-count").classList.toggle("bad", t.alerts_negative > 0);
    $("stores-count").classList.toggle("bad", t.behind > 0);
  }

  function renderStores(stores) {
    // behind first, then by store id; rebuilt in one go (100 rows is cheap)
    const rows = stores.slice().sort((a, b) =>
      (b.behind - a.behind) || (a.store_id < b.store_id ? -1 : a.store_id > b.store_id ? 1 : 0));
    const body = document.createElement("tbody");
    for (const s of rows) {
      const tr = document.createElement("tr");
      tr.dataset.store = s.store_id;
      if (s.behind) tr.className = "behind";
      cell(tr, s.store_id);
      cell(tr, fmt.format(s.applied_seq));
      cell(tr, fmt.format(s.highest_seq));
      cell(tr, s.missing ? s.missing + " in " + s.gaps.map((g) => g[0] === g[1] ? g[0] : g[0] + "–" + g[1]).join(", ") : "0");
      cell(tr, fmt.format(s.duplicates));
      cell(tr, ms(s.lag_p50_ms));
      cell(tr, ms(s.lag_p99_ms));
      cell(tr, age(s.last_event_age_s));
      body.appendChild(tr);
    }
    const table = $("stores");
    table.replaceChild(body, table.tBodies[0]);
  }

  function renderList(id, items, describe) {
    const list = $(id);
    const fresh = document.createElement("ul");
    fresh.id = id;
    fresh.className = list.className;
    for (const item of items) {
      const li = document.createElement("li");
      const [text, cls] = describe(item);
      li.textContent = text;
      if (cls) li.className = cls;
      fresh.appendChild(li);
    }
    if (!items.length) {
      const li = document.createElement("li");
      li.textContent = "none";
      fresh.appendChild(li);
    }
    list.replaceWith(fresh);
  }

  function renderAlerts(data) {
    setText("alerts-note", data.alerts_error ? data.alerts_error : "");
    renderList("alerts", data.alerts, (a) => [
      a.store_id + " / " + a.sku + ": " + a.kind + ", on hand " + a.on_hand +
        (a.kind === "low" ? " (threshold " + a.threshold + ")" : ""),
      a.kind,
    ]);
  }

  function renderDeadLetters(data) {
    renderList("dead-letter-list", data.dead_letters, (d) => [
      new Date(d.at * 1000).toLocaleTimeString() + " " + (d.store_id || "?") + " " + d.kind +
        ": " + (d.reasons || []).join("; "),
      null,
    ]);
  }

  function renderChart(points) {
    const canvas = $("sales-chart");
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 900;
    const height = canvas.clientHeight || 180;
    if (canvas.width !== Math.round(width * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const pad = { l: 40, r: 8, t: 8, b: 20 };
    const w = width - pad.l - pad.r;
    const h = height - pad.t - pad.b;
    const max = Math.max(1, ...points.map((p) => p.events));
    ctx.strokeStyle = "#e2e6ea";
    ctx.fillStyle = "#6b7580";
    ctx.font = "11px system-ui, sans-serif";
    for (let i = 0; i <= 4; i++) {
      const y = pad.t + h - (h * i) / 4;
      ctx.beginPath();
      ctx.moveTo(pad.l, y);
      ctx.lineTo(pad.l + w, y);
      ctx.stroke();
      ctx.fillText(String(Math.round((max * i) / 4)), 4, y + 4);
    }
    const bw = w / Math.max(1, points.length);
    ctx.fillStyle = "#2563eb";
    points.forEach((p, i) => {
      const bh = (h * p.events) / max;
      ctx.fillRect(pad.l + i * bw + 1, pad.t + h - bh, Math.max(1, bw - 2), bh);
    });
    ctx.fillStyle = "#6b7580";
    points.forEach((p, i) => {
      if (i % 5 === 0) {
        const d = new Date(p.minute * 1000);
        ctx.fillText(d.toTimeString().slice(0, 5), pad.l + i * bw, height - 4);
      }
    });
    const last = points.length ? points[points.length - 1] : { events: 0, units: 0 };
    const sum = points.reduce((acc, p) => acc + p.events, 0);
    setText("sales-legend", "sales (events) per minute; this minute " + last.events + " sales, " +
      last.units + " units; " + sum + " sales in the window");
  }

  function render(data) {
    renderTiles(data);
    renderStores(data.stores);
    renderAlerts(data);
    renderDeadLetters(data);
    renderChart(data.sales_per_minute);
    const status = $("status");
    status.className = "status" + (data.partial ? " error" : "");
    status.textContent = (data.partial ? "partial: " + data.errors.length + " worker(s) did not answer; " : "") +
      data.workers + " worker(s), updated " + new Date(data.generated_at * 1000).toLocaleTimeString();
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  }

  async function poll() {
    try {
      const response = await fetch("/api/dashboard", { cache: "no-store" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      render(await response.json());
    } catch (err) {
      const status = $("status");
      status.className = "status error";
      status.textContent = "cannot reach the worker (" + err.message + "); retrying";
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  async function lookup(event) {
    event.preventDefault();
    const store = $("lookup-store").value.trim();
    const sku = $("lookup-sku").value.trim();
    const out = $("lookup-result");
    out.className = "result";
    out.textContent = "…";
    try {
      const response = await fetch("/api/stores/" + encodeURIComponent(store) + "/stock/" +
        encodeURIComponent(sku), { cache: "no-store" });
      const body = await response.json();
      if (!response.ok) throw new Error(body.detail || "HTTP " + response.status);
      out.textContent = body.store_id + " / " + body.sku + ": on hand " + body.on_hand +
        ", reserved " + body.reserved + ", available " + body.available +
        " (centre applied up to seq " + body.applied_seq + ")";
    } catch (err) {
      out.className = "result error";
      out.textContent = err.message;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("lookup").addEventListener("submit", lookup);
    poll();
  });
})();
