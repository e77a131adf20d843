/* kanvoice dashboard: live figures from /api/events, the pipeline chart and the
 * finance buttons. Plain JavaScript, no build step, no libraries.
 *
 * render() builds the same markup as templates/_pipeline.html (classes, texts,
 * data-testid attributes); keep the two in step. Text goes in with textContent only.
 */
(function () {
  "use strict";

  const UNBILLED = ["ready", "drafted", "approved"];
  const NARROW = "(max-width: 640px)";
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
    return el("td", { className: stageClass(stage.state, attention), "data-label": stage.label, "data-testid": `${prefix}-${stage.state}` }, [
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
        el("td", { className: "num gap", "data-label": "Unbilled gap", "data-testid": `gap-${c.client}`, text: money(c.unbilled_gap, c.currency) }),
        el("td", { "data-label": "Action" }, [
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
    const table = el("table", { className: "pipeline cards", "data-testid": "overview-table" }, [
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

  // --- totals per currency, aging, overdue (templates/_pipeline.html "finance") ---

  const SORTS = ["client", "gap", "age"];

  function sortKey() {
    const value = new URLSearchParams(window.location.search).get("sort");
    return SORTS.includes(value) ? value : "client";
  }

  function byText(a, b) {
    return a < b ? -1 : a > b ? 1 : 0;
  }

  // The same order as mapping.aging.sort_rows: gap groups by currency (no exchange
  // rates), largest first; age puts the oldest ready work first, nothing ready last.
  function sortClients(clients, by) {
    const list = clients.slice();
    const byClient = (a, b) => byText(a.client, b.client);
    if (by === "gap") {
      list.sort((a, b) => byText(a.currency, b.currency) || Number(b.unbilled_gap) - Number(a.unbilled_gap) || byClient(a, b));
    } else if (by === "age") {
      const days = (c) => (c.aging ? c.aging.oldest_days : null);
      list.sort((a, b) => {
        const da = days(a);
        const db = days(b);
        if ((da === null) !== (db === null)) return da === null ? 1 : -1;
        return (db || 0) - (da || 0) || byClient(a, b);
      });
    } else {
      list.sort(byClient);
    }
    return list;
  }

  function financeSection(payload) {
    const stages = payload.stage_order.filter((s) => s.state !== "non_billable");
    const sort = payload.sort || sortKey();
    const totals = (payload.totals || []).map((t) =>
      el("tr", { "data-testid": `totals-${t.currency}` }, [
        el("th", { scope: "row", text: t.currency }),
        el("td", { className: "num", "data-label": "Clients", text: String(t.clients) }),
        ...stages.map((s) =>
          el("td", { className: "num s-" + s.state, "data-label": s.label, "data-testid": `totals-${t.currency}-${s.state}`, text: money(t.stages[s.state].amount, t.currency) })
        ),
        el("td", { className: "num gap", "data-label": "Unbilled gap", "data-testid": `totals-${t.currency}-gap`, text: money(t.unbilled_gap, t.currency) }),
      ])
    );
    const totalsTable = el("table", { className: "totals cards", "data-testid": "totals-table" }, [
      el("caption", { text: "Each currency on its own: amounts in different currencies are never added up." }),
      el("thead", {}, [
        el("tr", {}, [
          el("th", { scope: "col", text: "Currency" }),
          el("th", { scope: "col", className: "num", text: "Clients" }),
          ...stageHeaders(stages),
          el("th", { scope: "col", className: "num gap", text: "Unbilled gap" }),
        ]),
      ]),
      el("tbody", {}, totals),
    ]);
    const labels = [["client", "client"], ["gap", "unbilled gap"], ["age", "oldest ready work"]];
    const links = [];
    labels.forEach(([key, label], index) => {
      links.push(" ");
      links.push(
        sort === key
          ? el("strong", { "aria-current": "true", "data-testid": `sort-${key}`, text: label })
          : el("a", { href: `?sort=${key}`, "data-testid": `sort-${key}`, text: label })
      );
      if (index < labels.length - 1) links.push(" ·");
    });
    const buckets = payload.aging_buckets || [];
    const agingRows = payload.clients.map((c) => {
      const aging = c.aging || { oldest_days: null, buckets: {} };
      return el("tr", { "data-testid": `aging-row-${c.client}` }, [
        el("th", { scope: "row" }, [c.name + " ", el("span", { className: "client-key", text: c.currency })]),
        el("td", { className: "num gap", "data-label": "Unbilled gap", "data-testid": `aging-${c.client}-gap`, text: money(c.unbilled_gap, c.currency) }),
        el("td", { className: "num", "data-label": "Oldest ready", "data-testid": `aging-${c.client}-oldest`, text: aging.oldest_days === null ? "—" : `${aging.oldest_days} d` }),
        ...buckets.map((b) =>
          el("td", { className: "num age-" + b.slug, "data-label": b.label, "data-testid": `aging-${c.client}-${b.slug}`, text: money(aging.buckets[b.key] || "0", c.currency) })
        ),
      ]);
    });
    const agingTable = el("table", { className: "aging cards", "data-testid": "aging-table" }, [
      el("caption", { text: `Ready to bill by days since Done (as of ${payload.aging_as_of}).` }),
      el("thead", {}, [
        el("tr", {}, [
          el("th", { scope: "col", text: "Client" }),
          el("th", { scope: "col", className: "num gap", text: "Unbilled gap" }),
          el("th", { scope: "col", className: "num", text: "Oldest ready" }),
          ...buckets.map((b) => el("th", { scope: "col", className: "num", text: b.label })),
        ]),
      ]),
      el("tbody", {}, agingRows),
    ]);
    const overdue = payload.overdue || [];
    let overdueBlock;
    if (overdue.length) {
      const head = ["Invoice", "Client", "Amount", "Due", "Days overdue", "Reminders"];
      const numeric = new Set(["Amount", "Days overdue", "Reminders"]);
      const table = el("table", { className: "overdue cards", "data-testid": "overdue-table" }, [
        el("caption", { text: "Overdue invoices: open past their due date." }),
        el("thead", {}, [el("tr", {}, head.map((h) => el("th", { scope: "col", className: numeric.has(h) ? "num" : null, text: h })))]),
        el("tbody", {}, overdue.map((o) => {
          const name = o.number || String(o.invoice_id);
          return el("tr", { "data-testid": `overdue-${o.invoice_id}` }, [
            el("th", { scope: "row" }, [
              o.hosted_url ? el("a", { href: o.hosted_url, target: "_blank", rel: "noopener noreferrer", text: name }) : name,
            ]),
            el("td", { "data-label": "Client", text: o.client_name }),
            el("td", { className: "num", "data-label": "Amount", "data-testid": `overdue-${o.invoice_id}-amount`, text: money(o.amount, o.currency) }),
            el("td", { "data-label": "Due", text: (o.due_date || "").slice(0, 10) }),
            el("td", { className: "num attention", "data-label": "Days overdue", "data-testid": `overdue-${o.invoice_id}-days`, text: String(o.days_overdue) }),
            el("td", { className: "num", "data-label": "Reminders", text: String(o.reminders) }),
          ]);
        })),
      ]);
      overdueBlock = el("div", { className: "scroll", role: "region", "aria-label": "Overdue invoices", tabindex: "0" }, [table]);
    } else {
      overdueBlock = el("p", { "data-testid": "no-overdue", text: "No overdue invoices." });
    }
    return el("section", { className: "card", "aria-labelledby": "finance-title", "data-testid": "finance" }, [
      el("h2", { id: "finance-title", text: "Totals per currency and aging" }),
      scroll("finance-title", totalsTable),
      el("p", { className: "sort", "data-testid": "sort-links" }, ["Sort clients by", ...links]),
      el("div", { className: "scroll", role: "region", "aria-label": "Ready to bill by age", tabindex: "0" }, [agingTable]),
      overdueBlock,
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
    // On a phone the labels go above the bars, on a narrow drawing (legible text).
    const narrow = Boolean(window.matchMedia && window.matchMedia(NARROW).matches);
    const labelWidth = narrow ? 0 : 190;
    const barWidth = narrow ? 340 : 520;
    const totalWidth = narrow ? 0 : 150;
    const rowHeight = narrow ? 50 : 34;
    const barTop = narrow ? 22 : 4;
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
      group.append(svg("text", { x: 0, y: y + 16, class: "bar-label", text: c.name }));
      group.append(svg("rect", { x: labelWidth, y: y + barTop, width: barWidth, height: 20, class: "bar-track" }));
      let x = labelWidth;
      for (const s of stages) {
        const v = value(c, s);
        if (!v || !scale) continue;
        const w = (v / scale) * barWidth;
        const shown = measure === "hours" ? hours(c.stages[s.state].hours) : money(c.stages[s.state].amount, c.currency);
        group.append(
          svg("rect", { x: x, y: y + barTop, width: Math.max(w, 1), height: 20, class: "seg s-" + s.state, "data-testid": `bar-${c.client}-${s.state}` }, [
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
        narrow
          ? svg("text", { x: barWidth, y: y + 16, "text-anchor": "end", class: "bar-total", "data-testid": `bar-total-${c.client}`, text: total })
          : svg("text", { x: labelWidth + barWidth + 8, y: y + 18, class: "bar-total", "data-testid": `bar-total-${c.client}`, text: total })
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
      const total = money(d.total, d.currency || c.currency);
      return el("tr", { "data-testid": `draft-${d.id}` }, [
        el("th", { scope: "row", text: d.id }),
        el("td", { "data-label": "Period", text: d.period }),
        el("td", { className: "num", "data-label": "Total", "data-testid": `draft-total-${d.id}`, text: total }),
        el("td", { "data-label": "State", "data-testid": `draft-state-${d.id}`, text: d.state }),
        el("td", { className: "num", "data-label": "Version", text: d.version }),
        el("td", { className: "decision", "data-label": "Decision" }, [
          el("button", {
            type: "button", className: "primary", "data-action": "approve", "data-invoice": d.id,
            "data-client-name": d.client_name || c.name, "data-total": total,
            "data-auto-send": d.auto_send ? "yes" : "no",
            "data-testid": `approve-${d.id}`, disabled: !open, text: "Approve",
          }),
          el("label", { for: inputId, text: "Reason" }),
          el("input", { id: inputId, type: "text", maxlength: "1000", required: true, "data-reason-for": d.id, "data-testid": `reject-reason-${d.id}`, disabled: !open }),
          el("button", { type: "button", className: "danger", "data-action": "reject", "data-invoice": d.id, "data-testid": `reject-${d.id}`, disabled: !open, text: "Reject" }),
        ]),
      ]);
    });
    const table = el("table", { className: "drafts cards", "data-testid": `drafts-${c.client}` }, [
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
    for (const d of c.drafts) {
      if (d.detail) nodes.push(draftDetail(d.detail, !terminalStates.has(d.state)));
    }
    return nodes;
  }

  function external(href, text, testid) {
    return el("a", { href, target: "_blank", rel: "noopener noreferrer", "data-testid": testid, text });
  }

  function lineAdjust(d, l, open) {
    const cell = el("td", { className: "adjust", "data-label": "Adjust" });
    if (!(l.editable && open)) {
      cell.append(el("span", { className: "muted", text: "—" }));
      return cell;
    }
    const common = { type: "button", "data-invoice": d.id, "data-entry": l.entry_id, "data-version": d.version };
    if (l.kind === "time") {
      cell.append(
        el("label", { for: `hours-${l.entry_id}`, text: "Hours" }),
        el("input", { id: `hours-${l.entry_id}`, type: "text", inputmode: "decimal", size: "6", value: l.hours, "data-hours-for": l.entry_id, "data-testid": `line-hours-input-${l.entry_id}` })
      );
    }
    cell.append(
      el("label", { for: `desc-${l.entry_id}`, text: "Description" }),
      el("input", { id: `desc-${l.entry_id}`, type: "text", maxlength: "500", value: l.description, "data-desc-for": l.entry_id, "data-testid": `line-desc-input-${l.entry_id}` }),
      el("button", { ...common, "data-action": "adjust", "data-testid": `line-save-${l.entry_id}`, text: "Save" }),
      el("button", { ...common, className: "danger", "data-action": "write-off", "data-testid": `line-write-off-${l.entry_id}`, text: "Write off" }),
      el("button", { ...common, "data-action": "defer", "data-testid": `line-defer-${l.entry_id}`, text: "Defer to next draft" })
    );
    return cell;
  }

  function rateText(d, l) {
    if (l.rate !== null && l.rate !== undefined && l.kind === "time") return money(l.rate, d.currency) + " / h";
    return l.kind === "milestone" ? "fixed price" : "—";
  }

  function draftDetail(d, open) {
    const rows = d.lines.map((l) =>
      el("tr", { "data-testid": `line-${l.entry_id}` }, [
        el("th", { scope: "row" }, [
          l.url ? external(l.url, l.title, `line-link-${l.entry_id}`) : l.title,
          el("span", { className: "client-key", text: l.item }),
          el("span", { className: "desc", "data-testid": `line-desc-${l.entry_id}`, text: l.description }),
        ]),
        el("td", { "data-label": "Board · sprint", text: `${l.board} · ${l.sprint || "no sprint"}` }),
        el("td", { "data-label": "Person", text: l.people && l.people.length ? l.people.join(", ") : "—" }),
        el("td", { className: "num", "data-label": "Hours", "data-testid": `line-hours-${l.entry_id}`, text: hours(l.hours) }),
        el("td", { className: "num", "data-label": "Rate", text: rateText(d, l) }),
        el("td", { className: "num", "data-label": "Amount", "data-testid": `line-amount-${l.entry_id}`, text: money(l.amount, d.currency) }),
        el("td", { "data-label": "State", "data-testid": `line-state-${l.entry_id}`, text: l.state }),
        el("td", { "data-label": "Flags", "data-testid": `line-flags-${l.entry_id}` }, [
          l.flags.length ? el("span", { className: "flag", text: "⚠ " + l.flags.join(", ") }) : "none",
        ]),
        lineAdjust(d, l, open),
      ])
    );
    const headers = ["Item", "Board · sprint", "Person", "Hours", "Rate", "Amount", "State", "Flags", "Adjust"];
    const numeric = new Set(["Hours", "Rate", "Amount"]);
    const table = el("table", { className: "lines cards", "data-testid": `lines-${d.id}` }, [
      el("thead", {}, [el("tr", {}, headers.map((h) => el("th", { scope: "col", className: numeric.has(h) ? "num" : null, text: h })))]),
      el("tbody", {}, rows),
      el("tfoot", {}, [
        el("tr", {}, [
          el("th", { scope: "row", colspan: "5", text: "Total before tax" }),
          el("td", { className: "num", "data-label": "Total before tax", "data-testid": `lines-total-${d.id}`, text: money(d.total, d.currency) }),
          el("td", { colspan: "3" }),
        ]),
      ]),
    ]);
    const stripe = d.stripe_url
      ? external(d.stripe_url, `Stripe draft ${d.stripe_invoice_id}`, `stripe-link-${d.id}`)
      : el("span", { "data-testid": `stripe-link-${d.id}`, text: "not on Stripe yet" });
    return el("details", { className: "draft-detail", "data-testid": `details-${d.id}` }, [
      el("summary", { "data-testid": `details-summary-${d.id}`, text: `Lines of invoice ${d.id}: ${d.lines.length} lines, ${money(d.total, d.currency)}` }),
      el("p", { className: "detail-meta" }, [
        el("span", { text: `Version ${d.version}` }),
        el("span", { "data-testid": `tax-${d.id}`, text: d.tax.note }),
        el("span", {
          "data-testid": `send-${d.id}`,
          text: d.auto_send ? "emailed to the client once approved (auto-send)" : "not emailed on approval (auto-send off)",
        }),
        stripe,
      ]),
      d.over_budget
        ? el("p", { className: "flag budget-flag", role: "note", "data-testid": `budget-flags-${d.id}`, text: "⚠ Check before approving: " + d.budget_flags.join("; ") })
        : null,
      el("div", { className: "scroll", role: "region", "aria-label": `Lines of invoice ${d.id}`, tabindex: "0" }, [table]),
    ]);
  }

  function historySection(payload) {
    const history = payload.history;
    const tools = el("p", { className: "history-tools" }, [
      el("label", { for: "history-search", text: "Search" }),
      el("input", { id: "history-search", type: "search", "data-testid": "history-search", placeholder: "client, number, person, status" }),
      el("a", { href: `${config.apiBase}/audit?format=csv`, download: true, "data-testid": "audit-csv", text: "Export the audit log (CSV)" }),
    ]);
    const nodes = [el("h2", { id: "history-title", text: "Invoice history" }), tools];
    if (!history.length) {
      nodes.push(el("p", { className: "muted", "data-testid": "history-none", text: "No invoices yet." }));
    } else {
      const rows = history.map((h) =>
        el("tr", { "data-testid": `history-${h.id}` }, [
          el("th", { scope: "row", text: h.number ? `${h.id} · ${h.number}` : String(h.id) }),
          el("td", { "data-label": "Client", text: h.client_name }),
          el("td", { "data-label": "Period", text: h.period }),
          el("td", { "data-label": "Status", "data-testid": `history-status-${h.id}` }, [el("span", { className: `badge st-${h.status}`, text: h.status })]),
          el("td", { className: "num", "data-label": "Total", text: money(h.total, h.currency) }),
          el("td", { "data-label": "Approved", "data-testid": `history-approved-${h.id}`, text: h.approved_by ? `${h.approved_by} · ${h.approved_at}` : "—" }),
          el("td", { "data-label": "Rejected", text: h.rejected_by ? `${h.rejected_by}: ${h.rejected_reason}` : "—" }),
          el("td", { "data-label": "What happened" }, [
            el(
              "ol",
              { className: "events" },
              h.events.map((e) =>
                el("li", {}, [
                  `${e.label} · ${e.actor} · `,
                  el("time", { datetime: e.at, text: e.at_local }),
                  e.reason ? ` · ${e.reason}` : null,
                ])
              )
            ),
          ]),
          el("td", { "data-label": "Stripe" }, [h.stripe_url ? el("a", { href: h.stripe_url, target: "_blank", rel: "noopener noreferrer", text: h.number || h.stripe_invoice_id }) : "—"]),
        ])
      );
      const headers = ["Invoice", "Client", "Period", "Status", "Total", "Approved", "Rejected", "What happened", "Stripe"];
      nodes.push(
        el("div", { className: "scroll", role: "region", "aria-labelledby": "history-title", tabindex: "0" }, [
          el("table", { className: "history cards", "data-testid": "history-table" }, [
            el("thead", {}, [el("tr", {}, headers.map((h) => el("th", { scope: "col", className: h === "Total" ? "num" : null, text: h })))]),
            el("tbody", {}, rows),
          ]),
        ]),
        el("p", { className: "muted", "data-testid": "history-none", hidden: true, text: "No invoice matches the search." })
      );
    }
    return el("section", { className: "card", "aria-labelledby": "history-title", "data-testid": "history" }, nodes);
  }

  // --- board API quota (same markup as templates/_quota.html) ---

  function figure(value) {
    if (value === null || value === undefined) return "—";
    return String(Number(value));
  }

  function quotaSection(rows) {
    const nodes = [el("h2", { id: "quota-title", text: "Board API quota" })];
    if (!rows.length) {
      nodes.push(el("p", { className: "muted", "data-testid": "quota-none", text: "No GitHub or Azure DevOps board is configured." }));
    } else {
      const body = rows.map((q) => {
        const remaining = q.reported
          ? figure(q.remaining) + (q.limit !== null && q.limit !== undefined ? ` of ${figure(q.limit)}` : "")
          : "not reported";
        return el("tr", { "data-testid": `quota-${q.board}` }, [
          el("th", { scope: "row", text: q.board }),
          el("td", { "data-label": "API", text: q.resource ? `${q.source} · ${q.resource}` : q.source }),
          el("td", { className: "num", "data-label": "Remaining", "data-testid": `quota-${q.board}-remaining` }, [
            remaining,
            q.retry_after ? " " : null,
            q.retry_after ? el("span", { className: "flag", text: `⚠ slowed down ${figure(q.retry_after)} s` }) : null,
          ]),
          el("td", { "data-label": "Resets", "data-testid": `quota-${q.board}-reset` }, [
            q.reset_at ? el("time", { datetime: q.reset_at, text: q.reset_local || q.reset_at }) : "—",
          ]),
          el("td", { className: "num", "data-label": "Calls, last hour", "data-testid": `quota-${q.board}-calls`, text: String(q.calls_last_hour) }),
        ]);
      });
      const headers = [["Board", null], ["API", null], ["Remaining", "num"], ["Resets", null], ["Calls, last hour", "num"]];
      nodes.push(
        el("div", { className: "scroll", role: "region", "aria-labelledby": "quota-title", tabindex: "0" }, [
          el("table", { className: "quota cards", "data-testid": "quota-table" }, [
            el("thead", {}, [el("tr", {}, headers.map(([h, cls]) => el("th", { scope: "col", className: cls, text: h })))]),
            el("tbody", {}, body),
          ]),
        ]),
        el("p", { className: "muted", text: 'Azure DevOps reports its TSTU quota only when a request was delayed or close to the limit; "not reported" means it is not throttling.' })
      );
    }
    return el("section", { className: "card", "aria-labelledby": "quota-title", "data-testid": "board-quota" }, nodes);
  }

  function renderQuota(rows) {
    const holder = document.getElementById("quota");
    if (!holder || !Array.isArray(rows)) return;
    holder.replaceChildren(quotaSection(rows));
  }

  function filterHistory() {
    const input = document.getElementById("history-search");
    const table = document.querySelector('[data-testid="history-table"]');
    if (!input || !table) return;
    const words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
    let shown = 0;
    for (const row of table.tBodies[0].rows) {
      const text = row.textContent.toLowerCase();
      const match = words.every((w) => text.includes(w));
      row.hidden = !match;
      if (match) shown += 1;
    }
    const none = document.querySelector('[data-testid="history-none"]');
    if (none) none.hidden = shown > 0;
  }

  function breakdown(payload, c, kind, title, rows, key) {
    const titleId = `${kind}-${c.client}-title`;
    const nodes = [el("h3", { id: titleId, text: title })];
    if (!rows.length) {
      nodes.push(el("p", { className: "muted", text: "No entries yet." }));
      return nodes;
    }
    const table = el("table", { className: "breakdown cards", "data-testid": `${kind}-${c.client}` }, [
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
            el("td", { className: "num gap", "data-label": "Unbilled gap", "data-testid": `${prefix}-gap`, text: money(r.unbilled_gap, c.currency) }),
          ]);
        })
      ),
    ]);
    nodes.push(scroll(titleId, table));
    return nodes;
  }

  function retainerLine(c) {
    const r = c.retainer;
    if (!r) return null;
    const rolled = r.rollover_hours !== "0" ? ` (incl. ${hours(r.rollover_hours)} rolled over)` : "";
    const over = r.overage_hours !== "0" ? ` · ${hours(r.overage_hours)} overage` : "";
    return el("p", { className: "retainer", "data-testid": `retainer-${c.client}` }, [
      `Retainer, ${r.period}: `,
      el("strong", { text: `${hours(r.used_hours)} of ${hours(r.available_hours)} used (${r.percent} %)` }),
      `${rolled} · ${money(r.value_used, c.currency)} of ${money(r.amount, c.currency)}${over}`,
    ]);
  }

  function budgetLines(c) {
    return (c.budgets || []).map((b) => {
      const parts = [];
      if (b.hours !== null) parts.push(`${hours(b.spent_hours)} of ${hours(b.hours)}`);
      if (b.amount !== null) parts.push(`${money(b.spent_amount, c.currency)} of ${money(b.amount, c.currency)}`);
      const reached = b.reached.length ? ` · ${b.reached.join(" %, ")} % reached` : "";
      return el("p", { className: b.over ? "budget over" : "budget", "data-testid": `budget-${c.client}-${b.scope.replace(":", "-")}` }, [
        `Budget ${b.scope}, ${b.period}: `,
        el("strong", { text: `${parts.join(" · ")} (${b.percent} %)` }),
        " ",
        el("meter", { min: "0", max: "100", low: "80", high: "100", optimum: "0", value: String(Math.min(Number(b.percent), 100)), "aria-label": `${b.scope} budget used`, "data-testid": `budget-meter-${c.client}-${b.scope.replace(":", "-")}` }),
        `${reached}${b.over ? " · over budget" : ""}`,
      ]);
    });
  }

  function clientSection(payload, c) {
    const titleId = `client-${c.client}-title`;
    return el("section", { className: "card client", "aria-labelledby": titleId, "data-testid": `client-${c.client}` }, [
      el("h2", { id: titleId }, [c.name + " ", el("span", { className: "client-key", text: `${c.client} · ${c.currency}` })]),
      el("p", { className: "gap-callout" }, [
        "Unbilled gap ",
        el("strong", { "data-testid": `client-gap-${c.client}`, text: money(c.unbilled_gap, c.currency) }),
      ]),
      retainerLine(c),
      ...budgetLines(c),
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

  function olderThanShown(payload) {
    // A slow /api/pipeline answer must not undo a newer event-stream update.
    if (!current || !current.generated_at || !payload.generated_at) return false;
    return Date.parse(payload.generated_at) < Date.parse(current.generated_at);
  }

  function render(payload) {
    if (olderThanShown(payload)) return;
    current = payload;
    const container = document.getElementById("pipeline");
    const active = document.activeElement;
    const focusId = active && container.contains(active) ? active.getAttribute("data-testid") : null;
    // Keep what the user typed and which drafts are open across live updates.
    const typed = {};
    for (const input of container.querySelectorAll("input[data-testid]")) {
      if (input.type !== "radio" && input.value !== input.defaultValue) typed[input.dataset.testid] = input.value;
    }
    const opened = new Set(
      Array.from(container.querySelectorAll("details[open][data-testid]"), (d) => d.dataset.testid)
    );
    const chosen = measure();
    payload = Object.assign({}, payload, { clients: sortClients(payload.clients, sortKey()), sort: sortKey() });
    const sections = [
      financeSection(payload),
      overview(payload),
      chartSection(payload, chosen),
      ...payload.clients.map((c) => clientSection(payload, c)),
    ];
    if (payload.history !== undefined) sections.push(historySection(payload));
    container.replaceChildren(...sections);
    for (const input of container.querySelectorAll("input[data-testid]")) {
      const kept = typed[input.dataset.testid];
      if (kept !== undefined) input.value = kept;
    }
    for (const details of container.querySelectorAll("details[data-testid]")) {
      if (opened.has(details.dataset.testid)) details.open = true;
    }
    filterHistory();
    if (payload.board_quota !== undefined) renderQuota(payload.board_quota);
    if (focusId) {
      const again = container.querySelector(`[data-testid="${CSS.escape(focusId)}"]`);
      if (again) again.focus();
    }
    const stamp = document.querySelector('[data-testid="generated-at"]');
    if (stamp) {
      stamp.textContent = payload.generated_at_local || payload.generated_at;
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
    if (result && Array.isArray(result.lines) && result.total !== undefined) {
      return `invoice ${result.id} is now version ${result.version}, ${money(result.total, result.currency)}`;
    }
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
    if (action === "draft-all") {
      label = "Draft all due";
      button.disabled = true; // a second click while the question is open does nothing
      if (!window.confirm("Draft every client with ready lines and ask approval for each draft?\n\nNothing is finalized until it is approved.")) {
        button.disabled = false;
        say(`${label}: cancelled`);
        return;
      }
      request = () => post("/draft-all");
    } else if (action === "create-draft") {
      const client = button.dataset.client;
      label = `Create draft for ${client}`;
      request = () => post(`/clients/${encodeURIComponent(client)}/draft`);
    } else if (action === "approve") {
      const id = button.dataset.invoice;
      label = `Approve ${id}`;
      const path = `/invoices/${encodeURIComponent(id)}/approve`;
      const sending =
        button.dataset.autoSend === "yes"
          ? "It will be finalized on Stripe and emailed to the client now."
          : "It will be finalized on Stripe; it is not emailed (auto-send is off).";
      const who = button.dataset.clientName || "this client";
      const total = button.dataset.total ? ` for ${button.dataset.total}` : "";
      if (!window.confirm(`Approve invoice ${id} of ${who}${total}?\n\n${sending}`)) {
        say(`${label}: not approved (cancelled)`);
        return;
      }
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
    } else if (action === "adjust" || action === "write-off" || action === "defer") {
      const id = button.dataset.invoice;
      const entry = button.dataset.entry;
      const version = Number(button.dataset.version);
      const base = `/invoices/${encodeURIComponent(id)}`;
      if (action === "defer") {
        label = `Defer line ${entry} of ${id}`;
        request = () => post(`${base}/lines/${encodeURIComponent(entry)}/defer`, { version });
      } else if (action === "write-off") {
        label = `Write off line ${entry} of ${id}`;
        if (!window.confirm(`Write off line ${entry}? It leaves the invoice and is never billed.`)) {
          say(`${label}: cancelled`);
          return;
        }
        request = () => post(`${base}/adjust`, { version, changes: [{ entry_id: Number(entry), write_off: true }] });
      } else {
        label = `Adjust line ${entry} of ${id}`;
        const hoursInput = document.querySelector(`input[data-hours-for="${CSS.escape(entry)}"]`);
        const descInput = document.querySelector(`input[data-desc-for="${CSS.escape(entry)}"]`);
        const change = { entry_id: Number(entry) };
        if (hoursInput && hoursInput.value.trim() !== hoursInput.defaultValue) change.hours = hoursInput.value.trim();
        if (descInput && descInput.value.trim() !== descInput.defaultValue) change.description = descInput.value.trim();
        if (change.hours === undefined && change.description === undefined) {
          say(`${label}: change the hours or the description first`);
          return;
        }
        request = () => post(`${base}/adjust`, { version, changes: [change] });
      }
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
      // The page's own button (not redrawn by refresh): usable again once answered.
      if (action === "draft-all") button.disabled = false;
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
    source.addEventListener("quota", (event) => {
      renderQuota(JSON.parse(event.data));
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
    document.addEventListener("input", (event) => {
      if (event.target.id === "history-search") filterHistory();
    });
    if (window.matchMedia) window.matchMedia(NARROW).addEventListener("change", redrawChart);
    filterHistory();
    if (window.EventSource) connect();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
