// The sluice dashboard: polls api/status and draws it. Plain JavaScript, no dependencies.
// Series buckets are numbers (0 = the run was up and nothing came: a gap) or null (before the
// run began: unknown). The last bucket is the current, still filling, second or minute.
"use strict";

// -- queries: apiQuery(sql, sink) -------------------------------------------------------------------
// POST api/query needs the admin token (Authorization: Bearer). Give it once in the address, as
// the fragment #token=... (scripts/demo.sh prints that link): the page keeps it in this tab's
// sessionStorage and takes it out of the address bar. A 401 asks for it.

const SLUICE_TOKEN_KEY = "sluice.admin.token";

(function adoptTokenFromFragment() {
  const fragment = new URLSearchParams(window.location.hash.slice(1));
  const token = fragment.get("token");
  if (!token) return;
  sessionStorage.setItem(SLUICE_TOKEN_KEY, token);
  fragment.delete("token");
  const rest = fragment.toString();
  history.replaceState(null, "", window.location.pathname + window.location.search + (rest ? "#" + rest : ""));
})();

// A small modal form asking for the token; resolves to the token, or null when cancelled. Callers
// that hit a 401 while the form is open (the market panel polls) share it: one form, one answer.
// After a cancel the page stops asking (reload, or open the #token= link, to give one).
let tokenPrompt = null;
let tokenDeclined = false;

function askForToken(message) {
  if (tokenPrompt) return tokenPrompt;
  tokenPrompt = new Promise((resolve) => {
    const dialog = document.createElement("dialog");
    dialog.id = "token-prompt";
    const form = document.createElement("form");
    form.method = "dialog";
    const label = document.createElement("label");
    label.textContent = message + " ";
    const input = document.createElement("input");
    input.type = "password";
    input.id = "token-input";
    input.autocomplete = "off";
    label.append(input);
    const ok = document.createElement("button");
    ok.type = "submit";
    ok.value = "ok";
    ok.textContent = "Use token";
    const cancel = document.createElement("button");
    cancel.type = "submit";
    cancel.value = "cancel";
    cancel.textContent = "Cancel";
    form.append(label, ok, cancel);
    dialog.append(form);
    dialog.addEventListener("close", () => {
      const token = dialog.returnValue === "ok" ? input.value.trim() : "";
      dialog.remove();
      tokenPrompt = null;
      tokenDeclined = !token;
      resolve(token || null);
    });
    document.body.append(dialog);
    if (typeof dialog.showModal === "function") dialog.showModal();
    else dialog.setAttribute("open", "");
    input.focus();
  });
  return tokenPrompt;
}

// One read-only SELECT against a queryable sink (sink: its id, or undefined for the first one).
// Returns the parsed {columns, types, rows}; throws an Error with the server's reason otherwise.
async function apiQuery(sql, sink) {
  const body = { sql: String(sql) };
  if (sink !== undefined && sink !== null) body.sink = String(sink);
  for (let asked = 0; ; asked++) {
    const token = sessionStorage.getItem(SLUICE_TOKEN_KEY);
    const headers = { "Content-Type": "application/json" };
    if (token) headers.Authorization = "Bearer " + token;
    const response = await fetch("api/query", {
      method: "POST",
      headers: headers,
      body: JSON.stringify(body),
      cache: "no-store",
      credentials: "same-origin",
    });
    if (response.status === 401 && asked < 3 && !tokenDeclined) {
      const given = await askForToken(
        token ? "That token was refused. Admin token:" : "Admin token (in <data_dir>/admin.token):"
      );
      if (!given) throw new Error("a token is needed to query (see <data_dir>/admin.token)");
      sessionStorage.setItem(SLUICE_TOKEN_KEY, given);
      continue;
    }
    let answer = null;
    try {
      answer = await response.json();
    } catch (err) {
      answer = null;
    }
    if (!response.ok) throw new Error((answer && answer.error) || "HTTP " + response.status);
    return answer;
  }
}
window.apiQuery = apiQuery;

(function () {
  const POLL_MS = 2000;
  const SVG_NS = "http://www.w3.org/2000/svg";
  const nf = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
  let last = null;
  let failures = 0;

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    return node;
  }

  function fmt(n) {
    return n === null || n === undefined ? "–" : nf.format(n);
  }

  function ago(secs) {
    if (secs === null || secs === undefined) return "never";
    if (secs < 1) return "now";
    if (secs < 120) return Math.round(secs) + "s ago";
    if (secs < 7200) return Math.round(secs / 60) + "m ago";
    return Math.round(secs / 3600) + "h ago";
  }

  function duration(secs) {
    if (!secs) return "–";
    if (secs < 120) return secs.toFixed(secs < 10 ? 1 : 0) + "s";
    if (secs < 7200) return Math.round(secs / 60) + "m";
    return Math.round(secs / 3600) + "h";
  }

  function clock(unixSecs, withSeconds) {
    const d = new Date(unixSecs * 1000);
    const pad = (x) => String(x).padStart(2, "0");
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + (withSeconds ? ":" + pad(d.getSeconds()) : "");
  }

  // Sum the series of the chosen sources bucket by bucket; null only where every one is null.
  function sumSeries(sources, field) {
    let out = null;
    for (const source of sources) {
      const values = source[field] || [];
      if (out === null) out = values.map((v) => v);
      else out = out.map((v, i) => (v === null && values[i] === null ? null : (v || 0) + (values[i] || 0)));
    }
    return out || [];
  }

  function drawChart(container, values, span, unit) {
    const width = Math.max(container.clientWidth || 0, 320);
    const height = 160;
    const pad = { left: 48, right: 8, top: 10, bottom: 22 };
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const max = Math.max(1, ...values.filter((v) => v !== null));
    const slot = plotW / Math.max(values.length, 1);
    const barW = Math.max(1, slot - (slot > 4 ? 1 : 0));
    const root = svg("svg", {
      width: String(width), height: String(height), role: "img",
      "aria-label": "records per " + unit,
    });
    let bars = 0, gaps = 0, unknown = 0, total = 0;
    // axis and scale
    root.append(svg("line", { x1: pad.left, y1: pad.top + plotH, x2: width - pad.right, y2: pad.top + plotH, class: "axis" }));
    const maxLabel = svg("text", { x: pad.left - 6, y: pad.top + 8, class: "tick", "text-anchor": "end" });
    maxLabel.textContent = fmt(max);
    root.append(maxLabel);
    const zeroLabel = svg("text", { x: pad.left - 6, y: pad.top + plotH, class: "tick", "text-anchor": "end" });
    zeroLabel.textContent = "0";
    root.append(zeroLabel);
    values.forEach((value, i) => {
      const x = pad.left + i * slot;
      const when = span.start + i * span.step;
      const label = clock(when, unit === "second");
      let node;
      if (value === null) {
        unknown++;
        node = svg("rect", { x, y: pad.top, width: barW, height: plotH, class: "nodata" });
        node.append(titled(label + " — before this run"));
      } else if (value === 0) {
        gaps++;
        node = svg("rect", { x, y: pad.top + plotH - 6, width: barW, height: 6, class: "gap", "data-count": "0" });
        node.append(titled(label + " — no records (gap)"));
      } else {
        bars++;
        total += value;
        const h = Math.max(1, (value / max) * plotH);
        node = svg("rect", { x, y: pad.top + plotH - h, width: barW, height: h, class: "bar", "data-count": String(value) });
        node.append(titled(label + " — " + fmt(value) + " records"));
      }
      if (i === values.length - 1) node.classList.add("current");
      root.append(node);
    });
    if (values.length) {
      const first = svg("text", { x: pad.left, y: height - 6, class: "tick" });
      first.textContent = clock(span.start, unit === "second");
      const lastTick = svg("text", { x: width - pad.right, y: height - 6, class: "tick", "text-anchor": "end" });
      lastTick.textContent = clock(span.start + (values.length - 1) * span.step, unit === "second") + " (now)";
      root.append(first, lastTick);
    }
    root.setAttribute("data-bars", String(bars));
    root.setAttribute("data-gaps", String(gaps));
    root.setAttribute("data-unknown", String(unknown));
    root.setAttribute("data-total", String(total));
    container.replaceChildren(root);
  }

  function titled(text) {
    const t = svg("title");
    t.textContent = text;
    return t;
  }

  function renderHeader(status) {
    const ready = $("ready-badge");
    ready.textContent = status.ready ? "ready" : "not ready";
    ready.className = "badge " + (status.ready ? "ok" : "bad");
    const health = $("health-badge");
    if (status.health) {
      const ok = status.health.status === "ok";
      health.textContent = ok ? "event loop ok" : status.health.status;
      health.className = "badge " + (ok ? "ok" : "bad");
      health.title = "loop lag " + status.health.loop_lag_secs + "s";
    }
    $("meta").textContent = "v" + status.version + " · up " + duration(status.now - status.started_at) +
      (status.metrics_enabled ? "" : " · metrics off (admin.metrics: false)");
    const reasons = Object.entries(status.not_ready || {});
    $("not-ready-section").hidden = reasons.length === 0;
    $("not-ready").replaceChildren(...reasons.map(([name, why]) => el("li", {}, el("b", {}, name), ": " + why)));
  }

  function renderAlerts(alerts, now) {
    $("alerts-empty").hidden = alerts.length > 0;
    const order = { firing: 0, pending: 1, inactive: 2 };
    const sorted = [...alerts].sort((a, b) => order[a.state] - order[b.state] || a.name.localeCompare(b.name));
    $("alerts").replaceChildren(...sorted.map((a) => {
      const since = a.since ? " for " + duration(now - a.since) : "";
      const state = a.state === "inactive" ? (a.evaluated ? "ok" : "waiting") : a.state;
      return el("li", { class: "alert " + a.state, "data-alert": a.name, "data-state": a.state },
        el("span", { class: "state" }, state + since),
        el("b", {}, a.name),
        el("span", { class: "muted" }, " " + a.type + (a.component_id ? " · " + a.component_id : "")),
        el("div", { class: "summary" }, a.summary || ""));
    }));
  }

  function freshnessClass(secs, alerts, id) {
    if (secs === null) return "warn";
    const rule = alerts.find((a) => a.type === "freshness" && a.component_id === id);
    const limit = rule ? rule.threshold : 60;
    return secs > limit ? "bad" : secs > limit / 2 ? "warn" : "";
  }

  function lagCell(s) {
    // a source whose event times are recorded (a replay that keeps them) has no meaningful lag
    if (s.event_times === "recorded") {
      return el("td", { class: "num muted", "data-event-lag": "", title: "the source replays recorded event times: no lag to show" }, "n/a (recorded times)");
    }
    return el("td", { class: "num", "data-event-lag": s.event_lag_secs === null ? "" : s.event_lag_secs },
      s.event_lag_secs === null ? "–" : duration(s.event_lag_secs));
  }

  // a log source's partitions (e.g. Kafka): consumer lag per partition, under the source's id
  function partitionLag(details) {
    const parts = (details && details.partitions) || [];
    if (!parts.length) return "";
    return el("div", { class: "muted", "data-partition-lag": "" }, "lag " + parts.map((p) =>
      p.topic + "/" + p.partition + " " + (p.lag === null ? "–" : fmt(p.lag))).join(" · "));
  }

  function renderSources(status) {
    const rows = status.sources.map((s) => el("tr", { "data-source": s.id },
      el("td", {}, el("b", {}, s.id), partitionLag(s.details)),
      el("td", {}, s.type),
      el("td", { class: s.state === "running" ? "" : s.state === "finished" ? "muted" : "warn" },
        s.state + (s.connected ? "" : s.state === "running" ? " (not connected)" : "")),
      el("td", { class: "num" }, fmt(s.rate_per_sec)),
      el("td", { class: "num" }, fmt(s.records)),
      el("td", { class: "num " + freshnessClass(s.freshness_secs, status.alerts, s.id), "data-freshness": s.freshness_secs },
        ago(s.freshness_secs)),
      lagCell(s),
      el("td", { class: "num" + (s.gaps ? " warn" : ""), "data-gaps": s.gaps }, fmt(s.gaps) + " / " + fmt(s.missed) + (s.gaps_healed ? " (" + fmt(s.gaps_healed) + " healed)" : "")),
      el("td", { class: "num" + (s.reconnects ? " warn" : "") }, fmt(s.reconnects)),
      el("td", { class: "num" + (s.errors ? " bad" : ""), title: JSON.stringify(s.errors_by_type) }, fmt(s.errors)),
      el("td", { class: "num" + (s.dead_letters ? " bad" : "") }, fmt(s.dead_letters)),
      el("td", { class: "num" + (s.dropped ? " warn" : ""), title: JSON.stringify(s.dropped_by_reason), "data-dropped": s.dropped }, fmt(s.dropped)),
      // inputs turned into no record on purpose (repeats, unknown types): not a loss, neutral
      el("td", { class: "num muted", title: JSON.stringify(s.discarded_by_reason || {}), "data-discarded": s.discarded || 0 }, fmt(s.discarded || 0)),
      // records no sink takes (e.g. heartbeats, kept for liveness): by design, shown neutrally
      el("td", { class: "num muted", title: JSON.stringify(s.unrouted_by_kind || {}) }, fmt(s.unrouted || 0)),
      el("td", { class: "num" }, fmt(s.rate_limit_waits))));
    $("sources").tBodies[0].replaceChildren(...rows);
    const select = $("source-filter");
    const have = new Set([...select.options].map((o) => o.value));
    for (const s of status.sources) {
      if (!have.has(s.id)) select.append(el("option", { value: s.id }, s.id));
    }
  }

  function bufferCell(buffer) {
    const pct = Math.min(100, buffer.fill * 100);
    const bar = el("div", { class: "fill" + (pct > 90 ? " bad" : pct > 60 ? " warn" : "") });
    bar.style.width = pct.toFixed(1) + "%";
    return el("td", { class: "buffer", title: fmt(buffer.events) + " / " + fmt(buffer.max_events) + " records" },
      el("div", { class: "meter" }, bar), el("span", { class: "pct" }, pct.toFixed(pct < 10 ? 1 : 0) + "%"));
  }

  function renderSinks(status) {
    const rows = status.sinks.map((s) => {
      const state = !s.started ? "starting" : s.failing_secs > 0 ? "failing" : s.ready === false ? "not ready" : "ok";
      return el("tr", { "data-sink": s.id },
        el("td", {}, el("b", {}, s.id), s.dead_letter_sink ? el("span", { class: "muted" }, " (dead letters)") : ""),
        el("td", {}, s.type),
        el("td", { class: state === "ok" ? "" : "bad", title: s.not_ready_reason || "" }, state),
        el("td", { class: "num" }, fmt(s.rate_per_sec)),
        el("td", { class: "num" }, fmt(s.records)),
        bufferCell(s.buffer),
        el("td", { class: "num" + (s.errors ? " bad" : ""), title: JSON.stringify(s.errors_by_type) }, fmt(s.errors)),
        el("td", { class: "num" + (s.retries ? " warn" : "") }, fmt(s.retries)),
        el("td", { class: "num" + (s.dead_letters ? " bad" : "") }, fmt(s.dead_letters)),
        el("td", { class: "num" + (s.dropped ? " warn" : "") }, fmt(s.dropped)),
        el("td", { class: "num" + (s.failing_secs ? " bad" : "") }, duration(s.failing_secs)));
    });
    $("sinks").tBodies[0].replaceChildren(...rows);
  }

  function renderCharts(status) {
    const chosen = $("source-filter").value;
    const sources = status.sources.filter((s) => !chosen || s.id === chosen);
    drawChart($("chart-minutes"), sumSeries(sources, "per_minute"), status.minutes, "minute");
    drawChart($("chart-seconds"), sumSeries(sources, "per_second"), status.seconds, "second");
  }

  // ---- the market panel: 1-minute candles of the last hour from the sink's candles view ----------
  const MARKET_POLL_MS = 5000;
  const TABLE_RE = /^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$/;
  // one line: tests run it on chDB and on ClickHouse 18.16
  const MARKET_SQL = "SELECT product_id, toUInt32(minute) AS minute_ts, open, high, low, close, volume, spread FROM {table}_candles_1m WHERE minute >= toStartOfMinute(now()) - 3540 ORDER BY product_id, minute";
  let marketTimer = null;

  function priceText(p) {
    const digits = Math.abs(p) >= 1 ? 2 : 6;
    return p.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }

  function drawCandles(candles, now) {
    const width = 300, height = 110;
    const pad = { left: 4, right: 68, top: 6, bottom: 16 };
    const plotW = width - pad.left - pad.right, plotH = height - pad.top - pad.bottom;
    // the last hour, this minute included; a younger run is shown over its own minutes (10 at
    // least) so that its first candles are not slivers at the right edge
    const thisMinute = Math.floor(now / 60) * 60;
    const first = Math.min(...candles.map((c) => c.minute));
    const slots = Math.max(10, Math.min(60, Math.round((thisMinute - first) / 60) + 1));
    const start = thisMinute - (slots - 1) * 60;
    const lo = Math.min(...candles.map((c) => c.low)), hi = Math.max(...candles.map((c) => c.high));
    const span = hi - lo || Math.max(Math.abs(hi) * 1e-4, 1e-9);
    const y = (p) => pad.top + plotH - ((p - lo) / span) * plotH;
    const slot = plotW / slots;
    const x = (minute) => pad.left + ((minute - start) / 60) * slot;
    const root = svg("svg", { width: String(width), height: String(height), role: "img", "aria-label": "price, last hour" });
    let drawn = 0;
    for (const c of candles) {
      if (c.minute < start) continue;
      const cx = x(c.minute) + slot / 2;
      const up = c.close >= c.open;
      root.append(svg("line", { x1: cx, x2: cx, y1: y(c.high), y2: y(c.low), class: "wick" }));
      const top = y(Math.max(c.open, c.close));
      const body = svg("rect", {
        x: cx - Math.max(1, slot * 0.35), width: Math.max(2, slot * 0.7), y: top,
        height: Math.max(1, y(Math.min(c.open, c.close)) - top), class: "candle " + (up ? "up" : "down"),
      });
      body.append(titled(clock(c.minute) + "  O " + priceText(c.open) + "  H " + priceText(c.high) +
        "  L " + priceText(c.low) + "  C " + priceText(c.close) + "  vol " + fmt(c.volume)));
      root.append(body);
      drawn++;
    }
    const label = (text, yy) => {
      const t = svg("text", { x: width - pad.right + 4, y: yy, class: "tick" });
      t.textContent = text;
      return t;
    };
    root.append(label(priceText(hi), pad.top + 8), label(priceText(lo), pad.top + plotH));
    const startTick = svg("text", { x: pad.left, y: height - 3, class: "tick" });
    startTick.textContent = clock(start);
    const lastTick = svg("text", { x: pad.left + plotW, y: height - 3, class: "tick", "text-anchor": "end" });
    lastTick.textContent = "now";
    root.append(startTick, lastTick);
    root.setAttribute("data-candles", String(drawn));
    return root;
  }

  function renderMarket(result, now) {
    const index = Object.fromEntries(result.columns.map((name, i) => [name, i]));
    const byProduct = new Map();
    for (const row of result.rows) {
      const c = {};
      for (const name of ["open", "high", "low", "close", "volume", "spread"]) c[name] = Number(row[index[name]]);
      c.minute = Number(row[index.minute_ts]);
      const product = String(row[index.product_id]);
      if (!byProduct.has(product)) byProduct.set(product, []);
      byProduct.get(product).push(c);
    }
    const cards = [...byProduct.entries()].map(([product, candles]) => {
      const lastCandle = candles[candles.length - 1];
      const change = candles[0].open ? (lastCandle.close - candles[0].open) / candles[0].open * 100 : 0;
      const dir = change > 0 ? "up" : change < 0 ? "down" : "";
      return el("div", { class: "product", "data-product": product, "data-last": lastCandle.close },
        el("div", { class: "quote" },
          el("b", {}, product),
          el("span", { class: "price" }, priceText(lastCandle.close)),
          el("span", { class: dir }, (change >= 0 ? "+" : "") + change.toFixed(2) + "%"),
          el("span", { class: "muted" }, "spread " + String(+lastCandle.spread.toPrecision(4)))),
        drawCandles(candles, now));
    });
    $("market").replaceChildren(...cards);
    $("market-note").textContent = "last hour, 1-minute candles" + (cards.length ? "" : ": no trades yet");
  }

  async function pollMarket() {
    marketTimer = null;
    const status = last;
    const sink = status && status.sinks.find((s) => s.type === "clickhouse" && s.table && TABLE_RE.test(s.table));
    if (!sink) {
      $("market-section").hidden = true;
      marketTimer = setTimeout(pollMarket, MARKET_POLL_MS);
      return;
    }
    $("market-section").hidden = false;
    // the table name comes from the sink's validated config; no value is put into the SQL
    const sql = MARKET_SQL.replace("{table}", sink.table);
    try {
      renderMarket(await apiQuery(sql, sink.id), status.now);
    } catch (err) {
      $("market").replaceChildren();
      $("market-note").textContent = "no candles from sink " + sink.id + " (" + err.message + ")";
    } finally {
      marketTimer = setTimeout(pollMarket, MARKET_POLL_MS);
    }
  }
  // ---- end of the market panel ---------------------------------------------------------------

  function render(status) {
    renderHeader(status);
    renderAlerts(status.alerts, status.now);
    renderCharts(status);
    renderSources(status);
    renderSinks(status);
    $("updated").textContent = "updated " + clock(status.now, true);
    document.body.dataset.updated = String(status.now);
    document.body.dataset.uptime = String(status.now - status.started_at);
  }

  async function poll() {
    try {
      const response = await fetch("api/status", { cache: "no-store" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      last = await response.json();
      failures = 0;
      render(last);
    } catch (err) {
      failures++;
      const badge = $("ready-badge");
      badge.textContent = "unreachable (" + err.message + ")";
      badge.className = "badge bad";
    } finally {
      setTimeout(poll, failures ? Math.min(POLL_MS * failures, 10000) : POLL_MS);
    }
  }

  $("source-filter").addEventListener("change", () => last && renderCharts(last));
  window.addEventListener("resize", () => last && renderCharts(last));
  poll();
  marketTimer = setTimeout(pollMarket, 500);
})();
