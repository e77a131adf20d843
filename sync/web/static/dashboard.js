/* kanvoice dashboard: live figures from /api/events, the pipeline chart and the
 * finance buttons. Plain JavaScript, no build step, no libraries.
 *
 * render() builds the same markup as templates/_pipeline.html (classes, texts,
 * data-testid attributes); keep the two in step. Text goes in with textContent only.
 */
(function () {
  "use strict";

  const UNBILLED = ["ready", "drafted", "approved"];
  const SVG_NS = "http://www.w3.org/2000/svg";
  const body = document.body;
  const config = {
    pipelineUrl: body.dataset.pipelineUrl,
    eventsUrl: body.dataset.eventsUrl,
    apiBase: body.dataset.apiBase,
    csrfHeader: body.dataset.csrfHeader,
  };
  let terminalStates = new Set();
  let current = null;

  // --- formatting (the same rules as format_money / format_hours in dashboard.py) ---

  function groupDigits(text) {
    let s = String(text);
    let sign = "";
    if (s.startsWith("-")) {
      sign = "-";
      s = s.slice(1);
    }
    const dot = s.indexOf(".");
    const whole = dot >= 0 ? s.slice(0, dot) : s;
    const frac = dot >= 0 ? s.slice(dot) : "";
    return sign + whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",") + frac;
  }

  function money(amount, currency) {
    return groupDigits(amount) + " " + currency;
  }

  function hours(value) {
    return groupDigits(value) + " h";
  }

  // --- tiny DOM helpers ---

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key === "className") node.className = value;
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children || []) {
      if (child === null || child === undefined) continue;
      node.append(child);
    }
    return node;
  }

  function svg(tag, attrs, children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "text") node.textContent = value;
      else node.setAttribute(key, String(value));
    }
    for (const child of children || []) node.append(child);
    return node;
  }

  function stageClass(state, extra) {
    let cls = "num s-" + state;
    if (UNBILLED.includes(state)) cls += " unbilled";
    return extra ? cls + " " + extra : cls;
  }

  function stageHeaders(stageOrder) {
    return stageOrder.map((s) =>
      el("th", { scope: "col", className: stageClass(s.state), text: s.label })
    );
  }

  function stageCell(prefix, row, stage, currency) {
    const f = row.stages[stage.state];
    const attention = stage.state === "needs_review" && f.entries > 0 ? "attention" : "";
    const amount =
      stage.state === "non_billable"
        ? el("span", { className: "money cost", "data-testid": `${prefix}-${stage.state}-amount`, text: "cost" })
        : el("span", { className: "money", "data-testid": `${prefix}-${stage.state}-amount`, text: money(f.amount, currency) });
    return el("td", { className: stageClass(stage.state, attention), "data-testid": `${prefix}-${stage.state}` }, [
      el("span", { className: "hours", "data-testid": `${prefix}-${stage.state}-hours`, text: hours(f.hours) }),
      amount,
    ]);
  }

  function scroll(labelledBy, table) {
    return el("div", { className: "scroll", role: "region", "aria-labelledby": labelledBy, tabindex: "0" }, [table]);
  }

  // --- the sections ---

  function overview(payload) {
    const stages = payload.stage_order;
    const rows = payload.clients.map((c) => {
      const head = el("th", { scope: "row" }, [
        el("span", { className: "client-name", text: c.name }),
        el("span", { className: "client-key", text: `${c.client} · ${c.currency}` }),
        c.fixed_price_hours !== "0"
          ? el("span", { className: "fixed", "data-testid": `fixed-hours-${c.client}`, text: "fixed-price work: " + hours(c.fixed_price_hours) })
          : null,
      ]);
      return el("tr", { "data-testid": `client-row-${c.client}` }, [
        head,
        ...stages.map((s) => stageCell(`cell-${c.client}`, c, s, c.currency)),
        el("td", { className: "num gap", "data-testid": `gap-${c.client}`, text: money(c.unbilled_gap, c.currency) }),
        el("td", {}, [
          el("button", {
            type: "button",
            className: "primary",
            "data-action": "create-draft",
            "data-client": c.client,
            "data-testid": `create-draft-${c.client}`,
            "aria-label": `Create draft now for ${c.name}`,
            text: "Create draft now",
          }),
        ]),
      ]);
    });
    if (!rows.length) {
      rows.push(el("tr", {}, [el("td", { colspan: stages.length + 3, "data-testid": "no-clients", text: "No clients yet." })]));
    }
    const table = el("table", { className: "pipeline", "data-testid": "overview-table" }, [
      el("caption", { text: "Hours and money at every stage. Ready, drafted and approved make the unbilled gap." }),
      el("thead", {}, [
        el("tr", {}, [
          el("th", { scope: "col", text: "Client" }),
          ...stageHeaders(stages),
          el("th", { scope: "col", className: "num gap", text: "Unbilled gap" }),
          el("th", { scope: "col", text: "Action" }),
        ]),
      ]),
      el("tbody", {}, rows),
    ]);
    return el("section", { className: "card", "aria-labelledby": "overview-title", "data-testid": "overview" }, [
      el("h2", { id: "overview-title", text: "Pipeline per client" }),
      scroll("overview-title", table),
    ]);
  }

  function chartSection(payload, measure) {
    const radio = (value, label) =>
      el("label", {}, [
        el("input", { type: "radio", name: "measure", value, checked: measure === value, "data-testid": `measure-${value}` }),
        " " + label,
      ]);
    return el("section", { className: "card", "aria-labelledby": "chart-title", "data-testid": "chart-section" }, [
      el("h2", { id: "chart-title", text: "Pipeline chart" }),
      el("fieldset", { className: "measure" }, [
        el("legend", { text: "Measure" }),
        radio("money", "Money (share of each client's total)"),
        radio("hours", "Hours (same scale for all clients)"),
      ]),
      el("div", { id: "chart", className: "chart", "data-testid": "chart" }, [chart(payload, measure)]),
      el(
        "ul",
        { className: "legend", "aria-label": "Stages" },
        payload.stage_order.map((s) =>
          el("li", {}, [el("span", { className: "swatch s-" + s.state, "aria-hidden": "true" }), s.label])
        )
      ),
    ]);
  }

  // Exact sum of non-negative decimal strings (no floating point), keeping the
  // largest number of decimals among them: what the chart prints as a row's total.
  function sumStrings(values) {
    let scale = 0;
    for (const v of values) {
      const dot = String(v).indexOf(".");
      if (dot >= 0) scale = Math.max(scale, String(v).length - dot - 1);
    }
    let total = 0n;
    for (const v of values) {
      const text = String(v);
      if (text.startsWith("-")) continue;
      const [whole, frac = ""] = text.split(".");
      total += BigInt(whole + frac.padEnd(scale, "0"));
    }
    if (scale === 0) return total.toString();
    const digits = total.toString().padStart(scale + 1, "0");
    return digits.slice(0, -scale) + "." + digits.slice(-scale);
  }

  function chart(payload, measure) {
    const labelWidth = 190;
    const barWidth = 520;
    const totalWidth = 150;
    const rowHeight = 34;
    const width = labelWidth + barWidth + totalWidth;
    const clients = payload.clients;
    const height = Math.max(1, clients.length) * rowHeight + 8;
    const stages = payload.stage_order.filter((s) => measure === "hours" || s.state !== "non_billable");
    const value = (c, s) => {
      const n = Number(measure === "hours" ? c.stages[s.state].hours : c.stages[s.state].amount);
      return Number.isFinite(n) && n > 0 ? n : 0;
    };
    const totals = clients.map((c) => stages.reduce((sum, s) => sum + value(c, s), 0));
    const sharedMax = Math.max(0, ...totals);
    const description =
      measure === "hours"
        ? "Hours at each stage per client, on one scale."
        : "Money at each stage as a share of each client's total (currencies differ).";
    const root = svg("svg", {
      viewBox: `0 0 ${width} ${height}`,
      role: "img",
      "aria-labelledby": "chart-svg-title chart-svg-desc",
      class: "bars",
      "data-measure": measure,
    });
    root.append(svg("title", { id: "chart-svg-title", text: "Pipeline per client" }));
    root.append(svg("desc", { id: "chart-svg-desc", text: description }));
    clients.forEach((c, index) => {
      const y = 4 + index * rowHeight;
      const scale = measure === "hours" ? sharedMax : totals[index];
      const group = svg("g", { "data-testid": `bar-${c.client}` });
      group.append(svg("text", { x: 0, y: y + 18, class: "bar-label", text: c.name }));
      group.append(svg("rect", { x: labelWidth, y: y + 4, width: barWidth, height: 20, class: "bar-track" }));
      let x = labelWidth;
      for (const s of stages) {
        const v = value(c, s);
        if (!v || !scale) continue;
        const w = (v / scale) * barWidth;
        const shown = measure === "hours" ? hours(c.stages[s.state].hours) : money(c.stages[s.state].amount, c.currency);
        group.append(
          svg("rect", { x: x, y: y + 4, width: Math.max(w, 1), height: 20, class: "seg s-" + s.state, "data-testid": `bar-${c.client}-${s.state}` }, [
            svg("title", { text: `${c.name}: ${s.label}: ${shown}` }),
          ])
        );
        x += w;
      }
      const total =
        measure === "hours"
          ? hours(sumStrings(stages.map((s) => c.stages[s.state].hours)))
          : money(sumStrings(stages.map((s) => c.stages[s.state].amount)), c.currency);
      group.append(
        svg("text", { x: labelWidth + barWidth + 8, y: y + 18, class: "bar-total", "data-testid": `bar-total-${c.client}`, text: total })
      );
      root.append(group);
    });
    return root;
  }

  function draftsTable(c) {
    const titleId = `drafts-${c.client}-title`;
    const nodes = [el("h3", { id: titleId, text: "Open drafts" })];
    if (!c.drafts || !c.drafts.length) {
      nodes.push(el("p", { className: "muted", "data-testid": `no-drafts-${c.client}`, text: "No open drafts." }));
      return nodes;
    }
    const rows = c.drafts.map((d, i) => {
      const open = !terminalStates.has(d.state);
      const inputId = `reason-${c.client}-${i + 1}`;
      return el("tr", { "data-testid": `draft-${d.id}` }, [
        el("th", { scope: "row", text: d.id }),
        el("td", { text: d.period }),
        el("td", { className: "num", "data-testid": `draft-total-${d.id}`, text: money(d.total, d.currency || c.currency) }),
        el("td", { "data-testid": `draft-state-${d.id}`, text: d.state }),
        el("td", { className: "num", text: d.version }),
        el("td", { className: "decision" }, [
          el("button", { type: "button", className: "primary", "data-action": "approve", "data-invoice": d.id, "data-testid": `approve-${d.id}`, disabled: !open, text: "Approve" }),
          el("label", { for: inputId, text: "Reason" }),
          el("input", { id: inputId, type: "text", maxlength: "1000", required: true, "data-reason-for": d.id, "data-testid": `reject-reason-${d.id}`, disabled: !open }),
          el("button", { type: "button", className: "danger", "data-action": "reject", "data-invoice": d.id, "data-testid": `reject-${d.id}`, disabled: !open, text: "Reject" }),
        ]),
      ]);
    });
    const table = el("table", { className: "drafts", "data-testid": `drafts-${c.client}` }, [
      el("thead", {}, [
        el("tr", {}, [
          el("th", { scope: "col", text: "Invoice" }),
          el("th", { scope: "col", text: "Period" }),
          el("th", { scope: "col", className: "num", text: "Total" }),
          el("th", { scope: "col", text: "State" }),
          el("th", { scope: "col", className: "num", text: "Version" }),
          el("th", { scope: "col", text: "Decision" }),
        ]),
      ]),
      el("tbody", {}, rows),
    ]);
    nodes.push(scroll(titleId, table));
    return nodes;
  }

  function breakdown(payload, c, kind, title, rows, key) {
    const titleId = `${kind}-${c.client}-title`;
    const nodes = [el("h3", { id: titleId, text: title })];
    if (!rows.length) {
      nodes.push(el("p", { className: "muted", text: "No entries yet." }));
      return nodes;
    }
    const table = el("table", { className: "breakdown", "data-testid": `${kind}-${c.client}` }, [
      el("thead", {}, [
        el("tr", {}, [
          el("th", { scope: "col", text: key === "board" ? "Board" : "Sprint" }),
          ...stageHeaders(payload.stage_order),
          el("th", { scope: "col", className: "num gap", text: "Unbilled gap" }),
        ]),
      ]),
      el(
        "tbody",
        {},
        rows.map((r) => {
          const prefix = `${key}-${c.client}-${r[key]}`;
          return el("tr", { "data-testid": prefix }, [
            el("th", { scope: "row", text: r[key] }),
            ...payload.stage_order.map((s) => stageCell(prefix, r, s, c.currency)),
            el("td", { className: "num gap", "data-testid": `${prefix}-gap`, text: money(r.unbilled_gap, c.currency) }),
          ]);
        })
      ),
    ]);
    nodes.push(scroll(titleId, table));
    return nodes;
  }

  function clientSection(payload, c) {
    const titleId = `client-${c.client}-title`;
    return el("section", { className: "card client", "aria-labelledby": titleId, "data-testid": `client-${c.client}` }, [
      el("h2", { id: titleId }, [c.name + " ", el("span", { className: "client-key", text: `${c.client} · ${c.currency}` })]),
      el("p", { className: "gap-callout" }, [
        "Unbilled gap ",
        el("strong", { "data-testid": `client-gap-${c.client}`, text: money(c.unbilled_gap, c.currency) }),
      ]),
      ...draftsTable(c),
      ...breakdown(payload, c, "boards", "By board", c.boards, "board"),
      ...breakdown(payload, c, "sprints", "By sprint", c.sprints, "iteration"),
    ]);
  }

  // --- rendering, keeping what the user is typing ---

  function measure() {
    const checked = document.querySelector('input[name="measure"]:checked');
    return checked ? checked.value : "money";
  }

  function render(payload) {
    current = payload;
    const container = document.getElementById("pipeline");
    const active = document.activeElement;
    const focusId = active && container.contains(active) ? active.getAttribute("data-testid") : null;
    const reasons = {};
    for (const input of container.querySelectorAll("input[data-reason-for]")) {
      if (input.value) reasons[input.dataset.reasonFor] = input.value;
    }
    const chosen = measure();
    container.replaceChildren(
      overview(payload),
      chartSection(payload, chosen),
      ...payload.clients.map((c) => clientSection(payload, c))
    );
    for (const input of container.querySelectorAll("input[data-reason-for]")) {
      const kept = reasons[input.dataset.reasonFor];
      if (kept) input.value = kept;
    }
    if (focusId) {
      const again = container.querySelector(`[data-testid="${CSS.escape(focusId)}"]`);
      if (again) again.focus();
    }
    const stamp = document.querySelector('[data-testid="generated-at"]');
    if (stamp) {
      stamp.textContent = payload.generated_at;
      stamp.setAttribute("datetime", payload.generated_at);
    }
  }

  function redrawChart() {
    const holder = document.getElementById("chart");
    if (holder && current) holder.replaceChildren(chart(current, measure()));
  }

  // --- actions ---

  function say(text, isError) {
    const box = document.getElementById("action-status");
    box.textContent = text;
    box.classList.toggle("error", Boolean(isError));
  }

  async function refresh() {
    const response = await fetch(config.pipelineUrl, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (response.ok) render(await response.json());
  }

  async function post(path, data) {
    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    headers[config.csrfHeader] = "1";
    const response = await fetch(config.apiBase + path, {
      method: "POST",
      credentials: "same-origin",
      headers,
      body: JSON.stringify(data || {}),
    });
    let result = {};
    try {
      result = await response.json();
    } catch (_) {
      result = {};
    }
    if (!response.ok) {
      const detail = typeof result.detail === "string" ? result.detail : response.statusText;
      throw new Error(`${response.status}: ${detail}`);
    }
    return result;
  }

  function describe(result) {
    if (result && typeof result.message === "string") return result.message;
    if (result && result.id !== undefined) {
      const parts = [`invoice ${result.id}`];
      if (result.state) parts.push(result.state);
      if (result.total !== undefined && result.currency) parts.push(money(result.total, result.currency));
      return parts.join(", ");
    }
    return "done";
  }

  async function act(button) {
    const action = button.dataset.action;
    let label;
    let request;
    if (action === "create-draft") {
      const client = button.dataset.client;
      label = `Create draft for ${client}`;
      request = () => post(`/clients/${encodeURIComponent(client)}/draft`);
    } else if (action === "approve") {
      const id = button.dataset.invoice;
      label = `Approve ${id}`;
      const path = `/invoices/${encodeURIComponent(id)}/approve`;
      request = async () => {
        try {
          return await post(path);
        } catch (error) {
          // Under Stripe's minimum charge: the lines stay queued unless finance forces it.
          if (/minimum charge/.test(error.message) && window.confirm(`${error.message}\n\nFinalize it anyway?`)) {
            return await post(path, { force: true });
          }
          throw error;
        }
      };
    } else if (action === "reject") {
      const id = button.dataset.invoice;
      const input = document.querySelector(`input[data-reason-for="${CSS.escape(id)}"]`);
      const reason = input ? input.value.trim() : "";
      label = `Reject ${id}`;
      if (!reason) {
        say(`${label}: give a reason first (it is recorded with the decision)`);
        if (input) input.focus();
        return;
      }
      request = () => post(`/invoices/${encodeURIComponent(id)}/reject`, { reason });
    } else {
      return;
    }
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    say(`${label}: working…`);
    try {
      const result = await request();
      say(`${label}: ${describe(result)}`);
      await refresh();
    } catch (error) {
      say(`${label} failed: ${error.message}`, true);
      button.disabled = false;
    } finally {
      button.removeAttribute("aria-busy");
    }
  }

  // --- live updates ---

  function connect() {
    const status = document.querySelector('[data-testid="live-status"]');
    const source = new EventSource(config.eventsUrl, { withCredentials: true });
    source.addEventListener("open", () => {
      status.textContent = "live";
      status.classList.remove("offline");
    });
    source.addEventListener("pipeline", (event) => {
      render(JSON.parse(event.data));
      status.textContent = "live";
      status.classList.remove("offline");
    });
    source.addEventListener("problem", (event) => {
      const data = JSON.parse(event.data);
      say(`Could not read the ledger: ${data.message}`, true);
    });
    source.addEventListener("error", () => {
      status.textContent = "reconnecting…";
      status.classList.add("offline");
    });
    window.addEventListener("pagehide", () => source.close());
  }

  function start() {
    terminalStates = new Set(JSON.parse(document.getElementById("terminal-states").textContent));
    current = JSON.parse(document.getElementById("initial-payload").textContent);
    redrawChart();
    document.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-action]");
      if (button && !button.disabled) act(button);
    });
    document.addEventListener("change", (event) => {
      if (event.target.matches('input[name="measure"]')) redrawChart();
    });
    if (window.EventSource) connect();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
