// Renders /openapi.json as a plain list of endpoints, from this server only (Swagger UI at /docs loads from the internet).
"use strict";

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function typeOf(s) {
  if (!s) return "";
  if (s.$ref) return s.$ref.split("/").pop();
  if (s.anyOf) return s.anyOf.map(typeOf).join(" | ");
  if (s.type === "array") return typeOf(s.items) + "[]";
  return s.type || "";
}

async function main() {
  const spec = await (await fetch("/openapi.json")).json();
  document.getElementById("api-intro").textContent = spec.info.description || "";
  const list = document.getElementById("endpoints");
  const tbl = el("table", "endpoints");
  const head = el("tr");
  for (const h of ["method", "path", "what", "parameters", "answers"]) head.append(el("th", "", h));
  tbl.append(el("thead")); tbl.tHead.append(head);
  const body = el("tbody");
  for (const [path, ops] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      const tr = el("tr");
      tr.append(el("td", "m " + method, method.toUpperCase()), el("td", "p", path), el("td", "", op.summary || ""));
      const params = (op.parameters || []).map((p) => `${p.name} (${p.in}${p.required ? ", required" : ""})`);
      const rb = op.requestBody && op.requestBody.content;
      if (rb) for (const [ct, c] of Object.entries(rb)) params.push(`body ${ct}: ${typeOf(c.schema)}`);
      tr.append(el("td", "", params.join("; ")));
      tr.append(el("td", "", Object.entries(op.responses || {}).map(([k, v]) => `${k} ${v.description || ""}`).join("; ")));
      body.append(tr);
    }
  }
  tbl.append(body);
  list.append(el("div", "table-wrap tall")); list.firstChild.append(tbl);
  const sc = document.getElementById("schemas");
  for (const [name, s] of Object.entries((spec.components || {}).schemas || {})) {
    if (!s.properties || /Error|^Body_/.test(name)) continue;
    const d = el("div", "schema");
    d.append(el("h4", "", name));
    if (s.description) d.append(el("p", "muted", s.description));
    const ul = el("ul");
    for (const [k, p] of Object.entries(s.properties)) {
      ul.append(el("li", "", `${k}: ${typeOf(p)}${p.default !== undefined ? ` = ${JSON.stringify(p.default)}` : ""}` +
        `${p.description ? " · " + p.description : ""}`));
    }
    d.append(ul);
    sc.append(d);
  }
}

document.addEventListener("DOMContentLoaded", main);
