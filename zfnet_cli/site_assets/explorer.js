// The explorer's layer page: every unit's top-9 (projection | patch) and the chosen unit's
// numbers. Data come from data/<layer>.js (window.EXPLORER); no network, works from file://.
"use strict";
(function () {
  const D = window.EXPLORER;
  const units = D.units;
  const byUnit = new Map(units.map((u) => [u.unit, u]));
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    for (const k of kids) e.appendChild(k);
    return e;
  };
  const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(3));
  const SORTS = {
    unit: (a, b) => a.unit - b.unit,
    value: (a, b) => (b.values[0] || 0) - (a.values[0] || 0) || a.unit - b.unit,
    distinct: (a, b) => a.distinct - b.distinct || (b.values[0] || 0) - (a.values[0] || 0) || a.unit - b.unit,
    distinct_desc: (a, b) => b.distinct - a.distinct || (b.values[0] || 0) - (a.values[0] || 0) || a.unit - b.unit,
  };
  let order = units.slice();
  let current = units.length ? units[0].unit : null;

  function tiles(srcs, cls, lazy, alts) {
    const g = el("div", { class: "tiles " + cls });
    g.style.gridTemplateColumns = `repeat(${Math.max(1, Math.ceil(Math.sqrt(srcs.length)))}, 1fr)`;
    srcs.forEach((s, j) => {
      const a = { src: s, class: cls, alt: alts ? alts[j] : "", decoding: "async" };
      if (lazy) a.loading = "lazy";
      g.appendChild(el("img", a));
    });
    return g;
  }

  // A unit whose projection barely changes with the image (sanity.TEMPLATE_SIMILARITY).
  function flagged(u) {
    return D.threshold !== null && D.threshold !== undefined && u.similarity !== null &&
      u.similarity !== undefined && u.similarity > D.threshold;
  }

  // The overview: one card per unit, built once; sorting moves the cards.
  const cards = new Map();
  for (const u of units) {
    const live = u.values.length && u.values[0] > 0;
    const card = el("div", { class: "card" + (live ? "" : " dead") + (flagged(u) ? " template" : ""),
                             "data-unit": String(u.unit), tabindex: "0" },
      el("div", { class: "label", text: `unit ${u.unit} · ${fmt(u.values[0] || 0)} · ` +
                                         `${u.distinct} class${u.distinct === 1 ? "" : "es"}` +
                                         (u.similarity === null || u.similarity === undefined ? "" :
                                          ` · sim ${u.similarity.toFixed(2)}`) }),
      el("div", { class: "pair" }, tiles(u.proj, "proj", true), tiles(u.patch, "patch", true)));
    card.addEventListener("click", () => select(u.unit, true));
    card.addEventListener("keydown", (e) => { if (e.key === "Enter") select(u.unit, true); });
    cards.set(u.unit, card);
  }

  function layout() {
    const grid = $("grid");
    for (const u of order) grid.appendChild(cards.get(u.unit));
  }

  function detail(u) {
    const box = $("detail");
    box.textContent = "";
    const alts = u.images.map((n, j) => `${j + 1}: ${n} (${u.classes[j]})`);
    box.appendChild(el("h2", { text: `${D.layer} unit ${u.unit}` }));
    box.appendChild(el("div", { class: "pair big" },
      el("figure", {}, tiles(u.proj, "proj", false, alts), el("figcaption", { text: "projections" })),
      el("figure", {}, tiles(u.patch, "patch", false, alts), el("figcaption", { text: "image patches" }))));
    const head = el("tr", {}, ...["#", "image", "class", "activation", "position (y, x)",
                                  "patch box (y0, x0, y1, x1)", "receptive field"].map((h) => el("th", { text: h })));
    const table = el("table", { class: "records" }, head);
    u.values.forEach((v, j) => {
      table.appendChild(el("tr", {},
        el("td", { text: String(j + 1) }), el("td", { class: "image", text: u.images[j] }),
        el("td", { class: "class", text: u.classes[j] }), el("td", { class: "value", text: fmt(v) }),
        el("td", { text: u.positions[j].join(", ") }), el("td", { text: u.boxes[j].join(", ") }),
        el("td", { text: (u.fields ? u.fields[j] : u.boxes[j]).join(", ") })));
    });
    box.appendChild(table);
    box.appendChild(el("p", { class: "note", text: `${u.distinct} distinct class` +
      `${u.distinct === 1 ? "" : "es"} among the top-${u.values.length}; activations are the ` +
      `unit's value at the position, in ${D.layer}'s output (${D.shape.join(" x ")}).` }));
    if (u.similarity !== null && u.similarity !== undefined) {
      box.appendChild(el("p", { class: flagged(u) ? "warning" : "note", text:
        `Image similarity ${u.similarity.toFixed(3)} (${D.rule} rule): mean correlation between ` +
        `each seed's projection through its own image and through another shown image` +
        (flagged(u) ? ` — above ${D.threshold}: close to a template of the unit, not a picture ` +
                      `of the image.` : ".") }));
    }
    if (u.evolution && u.evolution.length) {
      const row = el("div", { class: "evolution" });
      for (const e of u.evolution) {
        row.appendChild(el("figure", {}, el("img", { src: e.img, class: "evo", alt: `epoch ${e.epoch}` }),
                           el("figcaption", { text: `epoch ${e.epoch}: ${fmt(e.value)}` })));
      }
      box.appendChild(el("h3", { text: "Evolution over the kept epochs (Fig 4): strongest activation, projected" }));
      box.appendChild(row);
    }
  }

  function select(unit, scroll) {
    const u = byUnit.get(unit);
    if (!u) {
      $("position").textContent = `no unit ${unit}: ${D.layer} has units 0..${units.length - 1}`;
      return;
    }
    if (current !== null && cards.get(current)) cards.get(current).classList.remove("chosen");
    current = unit;
    cards.get(unit).classList.add("chosen");
    $("unit").value = String(unit);
    const i = order.findIndex((x) => x.unit === unit);
    $("position").textContent = `${i + 1} of ${order.length} in this order`;
    detail(u);
    history.replaceState(null, "", `#unit=${unit}&sort=${$("sort").value}`);
    if (scroll) $("detail").scrollIntoView({ block: "start" });
  }

  function step(d) {
    if (!order.length) return;
    const i = order.findIndex((x) => x.unit === current);
    select(order[(i + d + order.length) % order.length].unit, false);
  }

  function sort(key) {
    order = units.slice().sort(SORTS[key] || SORTS.unit);
    layout();
    if (current !== null) select(current, false);
  }

  $("unit").max = String(Math.max(0, units.length - 1));
  $("unit").addEventListener("change", () => select(parseInt($("unit").value, 10), false));
  $("prev").addEventListener("click", () => step(-1));
  $("next").addEventListener("click", () => step(1));
  $("sort").addEventListener("change", () => sort($("sort").value));
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
    if (e.key === "ArrowLeft") step(-1);
    if (e.key === "ArrowRight") step(1);
  });
  const hash = new URLSearchParams(location.hash.slice(1));
  if (hash.get("sort") in SORTS) $("sort").value = hash.get("sort");
  sort($("sort").value);
  if (hash.has("unit") && byUnit.has(parseInt(hash.get("unit"), 10))) select(parseInt(hash.get("unit"), 10), false);
  else if (units.length) select(order[0].unit, false);
})();
