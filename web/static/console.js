// Live overview: polls the JSON endpoint and redraws charts (Plotly.react) and tables (textContent only).
(function () {
  "use strict";

  const body = document.body;
  const dataUrl = body.dataset.overviewUrl;
  const loginUrl = body.dataset.loginUrl;
  const pollMs = Number(body.dataset.pollMs) || 3000;
  const palette = ["#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#dc2626", "#65a30d"];
  const plotConfig = { displayModeBar: false, responsive: true };

  const usd = (x) => (x === null || x === undefined ? "—" :
    "$" + x.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 }));
  const pct = (x) => (x === null || x === undefined ? "—" : (x * 100).toFixed(1) + "%");
  const scale = (xs, k) => xs.map((x) => (x === null ? null : x * k));

  function layout(yTitle, extra) {
    return Object.assign({
      margin: { l: 56, r: 16, t: 8, b: 36 },
      height: 260,
      paper_bgcolor: "rgba(0,0,0,0)",
      plot_bgcolor: "rgba(0,0,0,0)",
      font: { family: "system-ui, -apple-system, Segoe UI, sans-serif", size: 12, color: "#334155" },
      xaxis: { type: "date", gridcolor: "#e2e8f0", tickformat: "%H:%M" },
      yaxis: { title: { text: yTitle }, gridcolor: "#e2e8f0", rangemode: "tozero", zeroline: false },
      legend: { orientation: "h", y: -0.22 },
      hovermode: "x unified",
      showlegend: true,
    }, extra || {});
  }

  function draw(id, traces, lay) {
    const el = document.getElementById(id);
    Plotly.react(el, traces, lay, plotConfig);
    const points = traces.reduce((n, t) => n + t.y.filter((v) => v !== null).length, 0);
    el.dataset.points = String(points);
  }

  // Hover labels are rounded to what the axis means: cents, tenths of a percent, tenths of a GPU.
  const HOVER = {
    usd: "%{y:$,.2f}", pct: "%{y:.1f}%", devices: "%{y:,.1f}",
  };

  function line(x, y, name, color, hover, extra) {
    return Object.assign({ type: "scatter", mode: "lines+markers", x: x, y: y, name: name,
      line: { color: color, width: 2 }, marker: { size: 4 }, connectgaps: false,
      hovertemplate: HOVER[hover] }, extra || {});
  }

  function drawCharts(d) {
    // Plotly ignores time zones: hand it the UTC wall-clock time, which is what the axis is labelled in.
    const x = d.minutes.map((m) => m.slice(0, 19));
    const usdAxis = (title) => ({ yaxis: { title: { text: title }, gridcolor: "#e2e8f0", rangemode: "tozero", tickprefix: "$" } });
    const pctAxis = (title) => ({ yaxis: { title: { text: title }, gridcolor: "#e2e8f0", range: [0, 105], ticksuffix: "%" } });
    draw("chart-cost", [
      line(x, d.cost.metered_usd_per_hour, "metered", palette[0], "usd"),
      line(x, d.cost.placement_usd_per_hour, "placement", palette[3], "usd", { mode: "lines", line: { color: palette[3], width: 2, shape: "hv", dash: "dash" } }),
    ], layout("$ / hour", usdAxis("$ / hour")));

    draw("chart-tokens", [line(x, d.cost.usd_per_million_tokens, "$ per 1M tokens", palette[2], "usd")],
      layout("$ / 1M tokens", Object.assign({ showlegend: false }, usdAxis("$ / 1M tokens"))));

    draw("chart-busy", d.utilisation.map((u, i) => line(x, scale(u.busy_fraction, 100), u.device_class, palette[i % palette.length], "pct")),
      layout("busy %", pctAxis("busy %")));

    const capacity = [];
    d.utilisation.forEach((u, i) => {
      const color = palette[i % palette.length];
      capacity.push(line(x, u.allocated_devices, u.device_class + " allocated", color, "devices"));
      capacity.push(line(x, x.map(() => u.healthy_devices), u.device_class + " healthy", color, "devices",
        { mode: "lines", line: { color: color, width: 1.5, dash: "dot" } }));
    });
    draw("chart-capacity", capacity, layout("GPUs"));

    const sla = [];
    d.sla.forEach((w, i) => {
      const color = palette[i % palette.length];
      const name = d.tenant ? w.workload : w.tenant + "/" + w.workload;
      sla.push(line(x, scale(w.attainment, 100), name, color, "pct"));
      if (w.target !== null) {
        sla.push(line(x, x.map(() => w.target * 100), name + " target", color, "pct",
          { mode: "lines", line: { color: color, width: 1, dash: "dash" }, showlegend: false }));
        const below = w.attainment.map((a, k) => (w.breached[k] ? a * 100 : null));
        if (below.some((v) => v !== null)) {
          sla.push(line(x, below, name + " below target", "#dc2626", "pct",
            { mode: "markers", marker: { color: "#dc2626", size: 9, symbol: "x" }, showlegend: false }));
        }
      }
    });
    draw("chart-sla", sla, layout("within SLA %", pctAxis("within SLA %")));
  }

  function fillTable(id, rows, cells, emptyText, width) {
    const tbody = document.getElementById(id);
    const fresh = document.createElement("tbody");
    fresh.id = id;
    rows.forEach((row) => {
      const tr = document.createElement("tr");
      cells(row).forEach(([text, numeric]) => {
        const td = document.createElement("td");
        td.textContent = text;
        if (numeric) td.className = "num";
        tr.appendChild(td);
      });
      fresh.appendChild(tr);
    });
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = width;
      td.className = "muted";
      td.textContent = emptyText;
      tr.appendChild(td);
      fresh.appendChild(tr);
    }
    tbody.replaceWith(fresh);
  }

  function fillKpis(d) {
    const h = d.headline;
    const values = {
      placement_usd_per_hour: usd(h.placement_usd_per_hour),
      placement_version: h.placement_version === null ? "—" : String(h.placement_version),
      placement_devices: String(h.placement_devices),
      metered_usd_per_hour: usd(h.metered_usd_per_hour),
      usd_per_million_tokens: usd(h.usd_per_million_tokens),
      sla_attainment: pct(h.sla_attainment),
      window_requests: h.window_requests.toLocaleString("en-US"),
    };
    document.querySelectorAll("[data-kpi]").forEach((el) => { el.textContent = values[el.dataset.kpi]; });
  }

  function render(d) {
    fillKpis(d);
    drawCharts(d);
    fillTable("placements-body", d.placements, (r) => [
      [r.workload], [r.fragment], [r.pool || "whole"], [r.device_class], [String(r.replicas), true], [String(r.slices), true], [usd(r.usd_per_hour), true],
    ], "No placement yet.", 7);
    fillTable("fleet-body", d.fleet, (r) => [
      [r.device_class], [r.vendor], [r.healthy_nodes + " / " + r.nodes, true],
      [r.healthy_devices + " / " + r.devices, true], [String(r.placed_devices), true], [usd(r.usd_per_device_hour), true],
    ], "No nodes registered.", 6);
  }

  const status = document.getElementById("status");

  async function poll() {
    try {
      const res = await fetch(dataUrl, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } });
      if (res.status === 401) { window.location.assign(loginUrl); return; }
      if (!res.ok) throw new Error("HTTP " + res.status);
      const d = await res.json();
      render(d);
      status.textContent = "updated " + d.generated_at.slice(11, 19);
      status.classList.remove("stale");
    } catch (err) {
      status.textContent = "update failed (" + err.message + "), retrying";
      status.classList.add("stale");
    }
    window.setTimeout(poll, pollMs);
  }

  poll();
})();
