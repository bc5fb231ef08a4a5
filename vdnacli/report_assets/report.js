"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("report-data").textContent);
  const tip = document.getElementById("tip");

  // viridis, 9 stops: dark = close, yellow = far
  const STOPS = [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
                 [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]];
  function colour(t) {
    t = Math.max(0, Math.min(1, t)) * (STOPS.length - 1);
    const k = Math.min(STOPS.length - 2, Math.floor(t)), f = t - k, a = STOPS[k], b = STOPS[k + 1];
    return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
  }
  const LUT = Array.from({ length: 256 }, (_, k) => colour(k / 255).map(Math.round));
  const DIAGONAL = [217, 221, 229];
  function fmt(x) {
    const a = Math.abs(x);
    return a < 10 ? x.toFixed(3) : a < 100 ? x.toFixed(2) : x.toFixed(1);
  }
  function value(g, i, j) {
    if (i === j) return 0;
    if (i > j) { const t = i; i = j; j = t; }
    const n = g.names.length;
    return g.values[i * n - (i * (i + 1)) / 2 + (j - i - 1)];
  }
  function goTo(name) {
    const el = document.getElementById("entry-" + name);
    if (!el) return;
    history.replaceState(null, "", "#entry-" + name);
    el.scrollIntoView({ block: "start" });
    el.classList.add("flash");
    setTimeout(() => el.classList.remove("flash"), 1600);
  }

  // -- heatmaps ------------------------------------------------------------------------
  function drawHeatmap(canvas) {
    const g = DATA.groups[+canvas.dataset.group];
    if (!g) return;
    const n = g.names.length;
    const labels = n <= 60;
    const cell = Math.max(1, Math.min(60, Math.floor(640 / n)));
    const ctx0 = canvas.getContext("2d");
    ctx0.font = "12px system-ui, sans-serif";
    const labelW = labels ? Math.min(180, Math.ceil(Math.max(...g.names.map(s => ctx0.measureText(s).width))) + 10) : 0;
    const side = cell * n;
    const cssW = labelW + side + 2, cssH = labelW + side + 2;
    // tiny cells: draw one pixel per cell, let CSS scale it up (pixelated)
    const scaleUp = side < 360 && !labels ? Math.ceil(360 / side) : 1;
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(cssW * dpr);
    canvas.height = Math.round(cssH * dpr);
    canvas.style.width = cssW * scaleUp + "px";
    canvas.style.height = cssH * scaleUp + "px";
    const ctx = canvas.getContext("2d");
    ctx.scale(dpr, dpr);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, cssW, cssH);
    const span = Math.max(g.vmax, 1e-12);
    // one pixel per cell in an n x n image, scaled up without smoothing: fast at 500 x 500
    const px = new ImageData(n, n);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        const c = i === j ? DIAGONAL : LUT[Math.min(255, Math.round(255 * value(g, i, j) / span))];
        const k = 4 * (i * n + j);
        px.data[k] = c[0]; px.data[k + 1] = c[1]; px.data[k + 2] = c[2]; px.data[k + 3] = 255;
      }
    }
    const off = document.createElement("canvas");
    off.width = n; off.height = n;
    off.getContext("2d").putImageData(px, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, labelW, labelW, side, side);
    if (labels) {
      ctx.fillStyle = "#1d2330";
      ctx.font = "12px system-ui, sans-serif";
      ctx.textBaseline = "middle";
      ctx.textAlign = "right";
      for (let i = 0; i < n; i++) ctx.fillText(g.names[i], labelW - 6, labelW + i * cell + cell / 2, labelW - 8);
      for (let j = 0; j < n; j++) {
        ctx.save();
        ctx.translate(labelW + j * cell + cell / 2, labelW - 6);
        ctx.rotate(-Math.PI / 2);
        ctx.textAlign = "left";
        ctx.fillText(g.names[j], 0, 0, labelW - 8);
        ctx.restore();
      }
      if (cell >= 34 && n <= 14) {
        ctx.textAlign = "center";
        ctx.font = "10.5px system-ui, sans-serif";
        for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
          if (i === j) continue;
          const v = value(g, i, j);
          ctx.fillStyle = v / span > 0.55 ? "#1d2330" : "#ffffff";
          ctx.fillText(v < 10 ? v.toFixed(2) : v.toFixed(1), labelW + j * cell + cell / 2, labelW + i * cell + cell / 2);
        }
      }
    }
    const geom = { n, cell, labelW, scaleUp };
    canvas.dataset.cell = cell * scaleUp;  // CSS px per cell and of the label margin (for tests and tools)
    canvas.dataset.margin = labelW * scaleUp;
    canvas.addEventListener("mousemove", ev => {
      const hit = cellAt(canvas, geom, ev);
      if (!hit) { tip.hidden = true; return; }
      const v = hit.i === hit.j ? 0 : value(g, hit.i, hit.j);
      tip.innerHTML = "";
      tip.append(g.names[hit.i] + " ↔ " + g.names[hit.j] + "  ");
      const b = document.createElement("b");
      b.textContent = hit.i === hit.j ? "same DNA" : "EMD " + fmt(v);
      tip.append(b);
      tip.hidden = false;
      tip.style.left = Math.min(ev.clientX + 14, window.innerWidth - tip.offsetWidth - 8) + "px";
      tip.style.top = ev.clientY + 16 + "px";
    });
    canvas.addEventListener("mouseleave", () => { tip.hidden = true; });
    canvas.addEventListener("click", ev => {
      const hit = cellAt(canvas, geom, ev);
      if (hit) goTo(g.names[hit.i]);
    });
    drawLegend(document.querySelector(`.legend[data-group="${canvas.dataset.group}"]`), g);
  }
  function cellAt(canvas, geom, ev) {
    const r = canvas.getBoundingClientRect();
    const x = (ev.clientX - r.left) / geom.scaleUp - geom.labelW, y = (ev.clientY - r.top) / geom.scaleUp - geom.labelW;
    const i = Math.floor(y / geom.cell), j = Math.floor(x / geom.cell);
    if (x < 0 || y < 0 || i >= geom.n || j >= geom.n) return null;
    return { i, j };
  }
  function drawLegend(el, g) {
    if (!el) return;
    const stops = STOPS.map((c, k) => `rgb(${c.join(",")}) ${(100 * k / (STOPS.length - 1)).toFixed(0)}%`).join(",");
    el.innerHTML = "";
    const scale = document.createElement("div");
    scale.className = "scale";
    const ramp = document.createElement("div");
    ramp.className = "ramp";
    ramp.style.background = `linear-gradient(to bottom, ${stops})`;
    const ticks = document.createElement("div");
    ticks.className = "ticks";
    for (const t of ["0 (close)", fmt(g.vmax / 2), "≥ " + fmt(g.vmax) + " (far)"]) {
      const s = document.createElement("span");
      s.textContent = t;
      ticks.append(s);
    }
    scale.append(ramp, ticks);
    const cap = document.createElement("p");
    cap.className = "hint";
    cap.textContent = `EMD, bin units. Closest pair ${fmt(g.vmin)}.`;
    el.append(scale, cap);
  }
  document.querySelectorAll("canvas.heatmap").forEach(drawHeatmap);

  // -- neighbour links: scroll to the card and mark it -------------------------------------
  document.addEventListener("click", ev => {
    const a = ev.target.closest && ev.target.closest("a[href^='#entry-']");
    if (!a) return;
    ev.preventDefault();
    goTo(decodeURIComponent(a.getAttribute("href").slice(7)));
  });

  // -- sortable catalog table -----------------------------------------------------------
  const table = document.getElementById("catalog-table");
  if (table) {
    const ths = Array.from(table.tHead.rows[0].cells);
    ths.forEach((th, col) => th.addEventListener("click", () => {
      const asc = th.getAttribute("aria-sort") !== "ascending";
      ths.forEach(h => h.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      const num = th.dataset.type === "num";
      const body = table.tBodies[0];
      const rows = Array.from(body.rows);
      const key = r => { const c = r.cells[col]; const v = c ? c.dataset.v : ""; return num ? parseFloat(v) : (v || ""); };
      rows.sort((a, b) => {
        const x = key(a), y = key(b);
        let c = num ? (x === y ? 0 : (isNaN(x) ? 1 : isNaN(y) ? -1 : x - y)) : x.localeCompare(y);
        if (c === 0) c = a.dataset.name.localeCompare(b.dataset.name);
        return asc ? c : -c;
      });
      body.append(...rows);
    }));
  }

  // -- filter by name -------------------------------------------------------------------
  const filter = document.getElementById("filter");
  if (filter) {
    filter.addEventListener("input", () => {
      const q = filter.value.trim().toLowerCase();
      document.querySelectorAll("#catalog-table tbody tr, .card").forEach(el => {
        el.hidden = q !== "" && !el.dataset.name.toLowerCase().includes(q);
      });
    });
  }
})();
