// The Genloom console: one script, no dependencies. Everything it shows comes from the API with
// the signed-in key (kept in this tab's sessionStorage, never in a cookie). Data from the server
// (model output, job metadata, names) goes into the page only as text (textContent), never as HTML.
"use strict";

const KEY = "genloom.console.key";
// routeAbort: ends whatever the page on screen still fetches or streams when another page opens.
const state = { key: sessionStorage.getItem(KEY), me: null, timers: [], routeAbort: new AbortController() };

// -- small helpers -------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "value") node.value = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function field(label, input) {
  return el("label", {}, label, input);
}

function when(unix) {
  return unix ? new Date(unix * 1000).toLocaleString() : "";
}

class ApiError extends Error {
  constructor(status, message, param) {
    super(message);
    this.status = status;
    this.param = param;
  }
}

async function api(path, { method = "GET", body, signal = state.routeAbort.signal } = {}) {
  const headers = { Authorization: `Bearer ${state.key}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const error = (data && data.error) || {};
    throw new ApiError(response.status, error.message || response.statusText, error.param);
  }
  return data;
}

// Server-sent events from a fetch (EventSource cannot send the Authorization header).
async function* events(path, { method = "GET", body, signal = state.routeAbort.signal } = {}) {
  const headers = { Authorization: `Bearer ${state.key}`, Accept: "text/event-stream" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
  if (!response.ok) {
    const data = await response.json().catch(() => null);
    throw new ApiError(response.status, (data && data.error && data.error.message) || response.statusText);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
  }
}

function showError(target, error) {
  target.replaceChildren(el("p", { class: "error", role: "alert", text: error instanceof Error ? error.message : String(error) }));
}

function every(ms, fn) {
  fn();
  state.timers.push(setInterval(fn, ms));
}

function abortable() {
  return state.routeAbort.signal;
}

async function modelsOf(kind) {
  const listed = await api("/v1/models");
  return listed.data.filter((m) => m.kind === kind).map((m) => m.id);
}

function select(options, attrs) {
  return el("select", attrs || {}, options.map((o) => (typeof o === "string" ? el("option", { value: o, text: o }) : el("option", { value: o.value, text: o.label }))));
}

// -- sign in ---------------------------------------------------------------------------------------

function signInPage(view, message) {
  const key = el("input", { type: "password", id: "key", autocomplete: "off", required: true, "aria-describedby": "key-help" });
  const error = el("p", { class: "error", role: "alert", text: message || "" });
  const form = el("form", {
    class: "grid",
    onsubmit: async (event) => {
      event.preventDefault();
      state.key = key.value.trim();
      try {
        await whoAmI();
        sessionStorage.setItem(KEY, state.key);
        go("#/playground");
      } catch (e) {
        state.key = null;
        error.textContent = e.status === 401 ? "That key was not accepted." : e.message;
      }
    },
  },
  field("API key", key),
  el("button", { type: "submit", text: "Sign in" }));
  view.replaceChildren(
    el("h1", { text: "Sign in" }),
    el("p", { id: "key-help", class: "muted", text: "An admin key sees everything; a tenant key sees its own tenant. The key stays in this tab only." }),
    form, error,
  );
  key.focus();
}

async function whoAmI() {
  state.me = await api("/v1/me");
  document.getElementById("who").textContent = `${state.me.tenant_name}${state.me.admin ? " (admin)" : ""}`;
  document.getElementById("nav").hidden = false;
  document.getElementById("signout").hidden = false;
  for (const link of document.querySelectorAll("nav a[data-admin]")) link.hidden = !state.me.admin;
}

function signOut() {
  sessionStorage.removeItem(KEY);
  state.key = null;
  state.me = null;
  document.getElementById("who").textContent = "";
  document.getElementById("nav").hidden = true;
  document.getElementById("signout").hidden = true;
  go("#/");
}

function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash; // the hashchange routes
}

// -- Markdown, as DOM nodes -------------------------------------------------------------------------

// A small subset of Markdown (headings, paragraphs, lists, fenced code, inline code, bold,
// italics), built from DOM nodes with text content only: no HTML is ever parsed, so markup in an
// answer stays text, and no link is made (a URL stays text too).
function markdown(source) {
  const root = document.createDocumentFragment();
  const lines = source.replace(/\r\n/g, "\n").split("\n");
  let i = 0;
  let paragraph = [];
  const flush = () => {
    if (paragraph.length) root.append(el("p", {}, inline(paragraph.join(" "))));
    paragraph = [];
  };
  while (i < lines.length) {
    const line = lines[i];
    const fence = line.match(/^\s*```/);
    if (fence) {
      flush();
      const code = [];
      i += 1;
      while (i < lines.length && !/^\s*```/.test(lines[i])) code.push(lines[i++]);
      i += 1; // the closing fence (or the end)
      root.append(el("pre", {}, el("code", { text: code.join("\n") })));
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    const item = line.match(/^\s*(?:[-*+]|(\d+)[.)])\s+(.*)$/);
    if (heading) {
      flush();
      root.append(el(`h${Math.min(6, heading[1].length + 2)}`, {}, inline(heading[2])));
    } else if (item) {
      flush();
      const ordered = item[1] !== undefined;
      const list = el(ordered ? "ol" : "ul", {});
      while (i < lines.length) {
        const next = lines[i].match(/^\s*(?:[-*+]|(\d+)[.)])\s+(.*)$/);
        if (!next || (next[1] !== undefined) !== ordered) break;
        list.append(el("li", {}, inline(next[2])));
        i += 1;
      }
      root.append(list);
      continue;
    } else if (!line.trim()) {
      flush();
    } else {
      paragraph.push(line.trim());
    }
    i += 1;
  }
  flush();
  return root;
}

// `code`, **bold**, *italic* within a line, as nodes.
function inline(text) {
  const parts = [];
  const pattern = /`([^`]+)`|\*\*([^*]+)\*\*|\*([^*\s][^*]*)\*/g;
  let at = 0;
  let match;
  while ((match = pattern.exec(text)) !== null) {
    if (match.index > at) parts.push(text.slice(at, match.index));
    if (match[1] !== undefined) parts.push(el("code", { text: match[1] }));
    else if (match[2] !== undefined) parts.push(el("strong", { text: match[2] }));
    else parts.push(el("em", { text: match[3] }));
    at = pattern.lastIndex;
  }
  if (at < text.length) parts.push(text.slice(at));
  return parts;
}

// -- playground ------------------------------------------------------------------------------------

async function playgroundPage(view) {
  const models = await modelsOf("text");
  const first = select(models, { id: "model" });
  const second = select(["", ...models], { id: "compare" });
  const system = el("textarea", { id: "system", placeholder: "You are a helpful assistant." });
  const prompt = el("textarea", { id: "prompt", required: true, placeholder: "Ask something" });
  const temperature = el("input", { id: "temperature", type: "number", min: 0, max: 2, step: 0.1, value: "0.7" });
  const maxTokens = el("input", { id: "max_tokens", type: "number", min: 1, value: "64" });
  const seed = el("input", { id: "seed", type: "number", min: 0, placeholder: "random" });
  const stop = el("input", { id: "stop", placeholder: "e.g. \\n\\n" });
  const format = select([{ value: "text", label: "text" }, { value: "json_object", label: "JSON object" }, { value: "json_schema", label: "JSON schema" }], { id: "format" });
  const schema = el("textarea", { id: "schema", placeholder: '{"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}' });
  const schemaLabel = el("label", { class: "wide", hidden: true }, "JSON schema", schema);
  format.addEventListener("change", () => { schemaLabel.hidden = format.value !== "json_schema"; });
  const panes = el("div", { class: "panes" });
  const rendered = el("input", { type: "checkbox", id: "markdown", checked: true });
  let sending = new AbortController(); // a new Send ends the streams still running
  const snippet = el("pre", { id: "snippet", class: "pane", hidden: true });

  function body(model) {
    const messages = [];
    if (system.value.trim()) messages.push({ role: "system", content: system.value });
    messages.push({ role: "user", content: prompt.value });
    const b = { model, messages, stream: true, stream_options: { include_usage: true }, temperature: Number(temperature.value), max_tokens: Number(maxTokens.value) };
    if (seed.value !== "") b.seed = Number(seed.value);
    if (stop.value) b.stop = [stop.value.replace(/\\n/g, "\n")];
    if (format.value === "json_object") b.response_format = { type: "json_object" };
    if (format.value === "json_schema") {
      let parsed = {};
      try {
        parsed = JSON.parse(schema.value || "{}");
      } catch (e) {
        throw new Error(`the JSON schema is not JSON: ${e.message}`);
      }
      b.response_format = { type: "json_schema", json_schema: { name: "answer", strict: true, schema: parsed } };
    }
    return b;
  }

  async function run(model, pane) {
    const output = el("div", { class: "output", "data-model": model });
    const status = el("p", { class: "muted", role: "status", text: "…" });
    pane.replaceChildren(el("h3", { text: model }), output, status);
    const signal = sending.signal;
    const started = performance.now();
    let first = null;
    try {
      for await (const chunk of events("/v1/chat/completions", { method: "POST", body: body(model), signal })) {
        if (chunk.error) throw new Error(chunk.error.message);
        for (const choice of chunk.choices || []) {
          const text = choice.delta && choice.delta.content;
          if (text) {
            if (first === null) first = performance.now() - started;
            output.textContent += text;
          }
          if (choice.finish_reason) status.textContent = `finished: ${choice.finish_reason}`;
        }
        if (chunk.usage) status.textContent += ` · ${chunk.usage.completion_tokens} tokens · first token ${Math.round(first || 0)} ms · ${chunk.system_fingerprint || ""}`;
      }
      status.className = "muted done";
      if (rendered.checked && format.value === "text" && output.textContent) { // streamed as text; Markdown once whole
        const text = output.textContent;
        output.replaceChildren(markdown(text));
        output.classList.add("markdown");
      }
    } catch (e) {
      status.className = "error";
      status.textContent = e.message;
    }
  }

  // The request as a snippet (the key left out), shown and copied; one that cannot be made says why.
  const copyAs = (render) => () => {
    snippet.hidden = false;
    try {
      snippet.textContent = render(body(first.value));
    } catch (e) {
      snippet.textContent = e.message;
      return;
    }
    if (navigator.clipboard) navigator.clipboard.writeText(snippet.textContent).catch(() => {});
  };

  const form = el("form", {
    class: "grid",
    onsubmit: (event) => {
      event.preventDefault();
      sending.abort();
      sending = new AbortController();
      state.routeAbort.signal.addEventListener("abort", () => sending.abort(), { once: true });
      const chosen = [first.value, second.value].filter(Boolean);
      panes.replaceChildren(...chosen.map(() => el("div", { class: "pane" })));
      chosen.forEach((model, i) => run(model, panes.children[i]));
    },
  },
  field("Model", first), field("Compare with", second), field("Temperature", temperature), field("Max tokens", maxTokens),
  field("Seed", seed), field("Stop", stop), field("Output", format),
  el("label", { class: "inline" }, rendered, "Show answers as Markdown"),
  schemaLabel,
  el("label", { class: "wide" }, "System prompt", system),
  el("label", { class: "wide" }, "Message", prompt),
  el("div", { class: "row wide" },
    el("button", { type: "submit", id: "send", text: "Send" }),
    el("button", {
      type: "button", class: "secondary", id: "as-curl", text: "Copy as curl",
      onclick: copyAs((b) => `curl ${location.origin}/v1/chat/completions \\\n  -H "Authorization: Bearer $GENLOOM_API_KEY" \\\n  -H "Content-Type: application/json" \\\n  -d '${JSON.stringify(b).replace(/'/g, "'\\''")}'`),
    }),
    el("button", {
      type: "button", class: "secondary", id: "as-python", text: "Copy as Python",
      onclick: copyAs((b) => {
        delete b.stream_options;
        const literal = JSON.stringify(b, null, 2).replace(/'/g, "\\u0027"); // no quote can end the Python string
        return `import json\n\nfrom openai import OpenAI\n\nclient = OpenAI(base_url="${location.origin}/v1")  # the key from OPENAI_API_KEY\nrequest = json.loads(r'''${literal}''')\nfor chunk in client.chat.completions.create(**request):\n    print(chunk.choices[0].delta.content or "", end="")`;
      }),
    })),
  );
  view.replaceChildren(el("h1", { text: "Playground" }), form, panes, snippet);
}

// -- images ----------------------------------------------------------------------------------------

async function imagesPage(view) {
  const models = await modelsOf("image");
  if (!models.length) {
    view.replaceChildren(el("h1", { text: "Images" }), el("p", { class: "muted", text: "No image model is served." }));
    return;
  }
  const model = select(models, { id: "image-model" });
  const compare = select(["", ...models], { id: "image-compare" });
  const prompt = el("input", { id: "image-prompt", required: true, placeholder: "a lighthouse at dusk" });
  const negative = el("input", { id: "negative" });
  const size = el("input", { id: "size", placeholder: "auto" });
  const steps = el("input", { id: "steps", type: "number", min: 1, placeholder: "default" });
  const guidance = el("input", { id: "guidance", type: "number", min: 0, step: 0.5, placeholder: "default" });
  const seed = el("input", { id: "image-seed", type: "number", min: 0, placeholder: "random" });
  const n = el("input", { id: "n", type: "number", min: 1, value: "1" });
  const gallery = el("div", { class: "gallery", "aria-live": "polite" });
  const status = el("p", { class: "muted" });
  const form = el("form", {
    class: "grid",
    onsubmit: async (event) => {
      event.preventDefault();
      for (const chosen of [model.value, compare.value].filter(Boolean)) draw(chosen);
    },
  },
  field("Model", model), field("Compare with", compare), field("Prompt", prompt), field("Negative prompt", negative), field("Size", size),
  field("Steps", steps), field("Guidance", guidance), field("Seed", seed), field("Images", n),
  el("button", { type: "submit", id: "draw", text: "Generate" }));
  // The same prompt, parameters and seed on each chosen model: their pictures side by side.
  async function draw(chosenModel) {
      const body = { model: chosenModel, prompt: prompt.value, n: Number(n.value) || 1, response_format: "b64_json" };
      if (negative.value) body.negative_prompt = negative.value;
      if (size.value) body.size = size.value;
      if (steps.value) body.steps = Number(steps.value);
      if (guidance.value) body.guidance_scale = Number(guidance.value);
      if (seed.value !== "") body.seed = Number(seed.value);
      status.className = "muted";
      status.textContent = "drawing…";
      try {
        const answer = await api("/v1/images/generations", { method: "POST", body, signal: abortable() });
        status.textContent = `${answer.data.length} picture(s)`;
        for (const item of answer.data) {
          const details = el("pre", { class: "provenance", hidden: true });
          const figure = el("figure", { "data-model": chosenModel },
            el("img", { src: `data:image/png;base64,${item.b64_json}`, alt: body.prompt }),
            el("figcaption", {}, `${chosenModel} · seed ${item.seed} `,
              el("button", {
                type: "button", class: "secondary", text: "Provenance",
                onclick: async () => {
                  details.hidden = !details.hidden;
                  if (!details.textContent) {
                    try {
                      const file = await api(`/v1/files/${encodeURIComponent(item.file_id)}`);
                      details.textContent = JSON.stringify(file.metadata, null, 2);
                    } catch (e) {
                      details.textContent = e.message;
                    }
                  }
                },
              })),
            details);
          gallery.prepend(figure);
        }
      } catch (e) {
        status.className = "error";
        status.textContent = e.message;
      }
  }
  view.replaceChildren(el("h1", { text: "Images" }), form, status, gallery);
}

// -- jobs ------------------------------------------------------------------------------------------

async function jobsPage(view, params) {
  const stateFilter = select(["", "queued", "processing", "retrying", "completed", "failed", "cancelled"], { id: "state-filter", "aria-label": "State" });
  stateFilter.value = params.get("state") || "";
  const modelFilter = select([{ value: "", label: "every model" }], { id: "model-filter", "aria-label": "Model" });
  const tenantFilter = select([{ value: "", label: "this key's tenant" }, { value: "*", label: "every tenant" }], { id: "tenant-filter", "aria-label": "Tenant" });
  const table = el("tbody");
  const more = el("button", { type: "button", class: "secondary", id: "more", text: "More", hidden: true });
  const detail = el("section", { id: "job-detail", "aria-live": "polite" });
  const models = await modelsOf("text");
  const model = select(models, { id: "job-model" });
  const prompt = el("input", { id: "job-prompt", required: true, placeholder: "Summarise…" });
  const tokens = el("input", { id: "job-tokens", type: "number", min: 1, value: "32" });
  let last = null;
  let paged = false; // after "More", the refresh would drop the rows paged in: it pauses
  let asked = 0; // the newest load wins

  function row(job) {
    return el("tr", { "data-job": job.id },
      el("td", {}, el("a", { href: `#/jobs/${job.id}`, text: job.id })),
      el("td", { class: "status", text: job.status }),
      el("td", { text: job.model }),
      el("td", { text: when(job.created_at) }),
      el("td", { text: job.metadata ? JSON.stringify(job.metadata) : "" }));
  }

  async function load(append) {
    const mine = ++asked;
    const query = new URLSearchParams({ limit: "20" });
    if (stateFilter.value) query.set("state", stateFilter.value);
    if (modelFilter.value) query.set("model", modelFilter.value);
    if (tenantFilter.value) query.set("tenant", tenantFilter.value);
    if (append && last) query.set("after", last);
    const page = await api(`/v1/jobs?${query}`);
    if (mine !== asked) return;
    paged = append;
    if (!append) table.replaceChildren();
    page.data.forEach((job) => table.append(row(job)));
    last = page.last_id;
    more.hidden = !page.has_more;
  }

  for (const m of models) modelFilter.append(el("option", { value: m, text: m }));
  const anyTenant = state.me.admin && state.me.key_id; // with auth off, jobs keep to the tenant header
  if (anyTenant) {
    const tenants = await api("/v1/admin/tenants").catch(() => ({ data: [] }));
    for (const t of tenants.data) tenantFilter.append(el("option", { value: t.id, text: t.name }));
  }
  for (const filter of [stateFilter, modelFilter, tenantFilter]) filter.addEventListener("change", () => load(false).catch((e) => showError(detail, e)));
  more.addEventListener("click", () => load(true).catch((e) => showError(detail, e)));
  const form = el("form", {
    class: "grid",
    onsubmit: async (event) => {
      event.preventDefault();
      try {
        const job = await api("/v1/jobs", {
          method: "POST",
          body: { url: "/v1/chat/completions", body: { model: model.value, messages: [{ role: "user", content: prompt.value }], max_tokens: Number(tokens.value) }, metadata: { from: "console" } },
        });
        location.hash = `#/jobs/${job.id}`;
      } catch (e) {
        showError(detail, e);
      }
    },
  },
  field("Model", model), field("Prompt", prompt), field("Max tokens", tokens),
  el("button", { type: "submit", id: "submit-job", text: "Submit job" }));
  view.replaceChildren(
    el("h1", { text: "Jobs" }), form,
    el("div", { class: "row" }, field("State", stateFilter), field("Model", modelFilter), anyTenant ? field("Tenant", tenantFilter) : null),
    el("div", { class: "scroll" }, el("table", {}, el("thead", {}, el("tr", {}, ["Job", "Status", "Model", "Created", "Metadata"].map((h) => el("th", { text: h })))), table)),
    more, detail);
  every(3000, () => (paged || table.contains(document.activeElement) ? null : load(false).catch(() => {})));
  if (params.get("job")) jobDetail(detail, params.get("job"));
}

async function jobDetail(target, id) {
  const status = el("span", { id: "detail-status", class: "badge" });
  const timeline = el("ol", { id: "timeline" });
  const result = el("pre", { id: "job-result" });
  const metadata = el("pre", { id: "job-metadata" });
  const webhook = el("div", { id: "job-webhook" });
  const problem = el("p", { class: "error", role: "alert", id: "job-problem" });
  const cancel = el("button", { type: "button", id: "cancel-job", text: "Cancel" });
  const retry = el("button", { type: "button", class: "secondary", id: "retry-job", text: "Retry" });
  target.replaceChildren(el("h2", {}, `Job ${id} `, status), el("div", { class: "row" }, cancel, retry), problem,
    el("h3", { text: "Timeline" }), timeline, el("h3", { text: "Result" }), result, el("h3", { text: "Metadata" }), metadata, webhook);

  function show(job) {
    status.textContent = job.status;
    cancel.disabled = ["completed", "failed", "cancelled"].includes(job.status);
    retry.disabled = !["failed", "cancelled"].includes(job.status);
    metadata.textContent = job.metadata ? JSON.stringify(job.metadata, null, 2) : "";
    const choice = job.result && job.result.choices && job.result.choices[0];
    result.textContent = choice ? (choice.message ? choice.message.content : choice.text || "") : job.error ? JSON.stringify(job.error) : "";
    if (job.webhook) {
      webhook.replaceChildren(el("h3", { text: `Webhook: ${job.webhook.status || "pending"}` }),
        el("ol", {}, job.webhook.deliveries.map((d) => el("li", { text: `${when(d.at)} attempt ${d.attempt}: ${d.status_code || d.error || ""}${d.delivered ? " (delivered)" : ""} ${d.duration_ms ?? ""} ms` }))));
    }
    timeline.replaceChildren(...job.transitions.map((t) => el("li", { text: `${when(t.at)} ${t.status}${t.message ? `: ${t.message}` : ""}` })));
  }
  const act = (method, path) => async () => {
    try {
      show(await api(`/v1/jobs/${encodeURIComponent(id)}${path}`, { method }));
    } catch (e) {
      problem.textContent = e.message;
    }
  };
  cancel.addEventListener("click", act("DELETE", ""));
  retry.addEventListener("click", act("POST", "/retry"));
  try {
    const path = `/v1/jobs/${encodeURIComponent(id)}`;
    show(await api(path));
    for await (const change of events(`${path}/events`, { signal: abortable() })) {
      if (change.type === "job.status") show(await api(path));
    }
    show(await api(path));
  } catch (e) {
    if (e.name !== "AbortError") showError(target, e);
  }
}

// -- queue (admin) ---------------------------------------------------------------------------------

async function queuePage(view) {
  const depths = el("tbody");
  const workers = el("tbody");
  const stale = el("p", { class: "error", role: "alert", id: "queue-stale" });
  view.replaceChildren(
    el("h1", { text: "Queue" }), stale,
    el("h2", { text: "Waiting" }), el("div", { class: "scroll" }, el("table", { id: "depths" }, el("thead", {}, el("tr", {}, ["Model", "Realtime", "Async"].map((h) => el("th", { text: h })))), depths)),
    el("h2", { text: "Running" }), el("div", { class: "scroll" }, el("table", { id: "workers" }, el("thead", {}, el("tr", {}, ["Model", "Kind", "State", "Rows in use", "Batch of"].map((h) => el("th", { text: h })))), workers)));
  // Pushed by the server every second while the page is open (ended when another page opens);
  // the server ends a stream after 5 minutes, and the page opens the next one.
  const signal = state.routeAbort.signal;
  (async () => {
    try {
      while (!signal.aborted) {
        for await (const queue of events("/v1/admin/queue/events?every_s=1", { signal })) {
          if (queue.error) throw new Error(queue.error.message);
          depths.replaceChildren(...Object.entries(queue.models).map(([m, by]) => el("tr", {}, el("td", { text: m }), el("td", { text: by.realtime || 0 }), el("td", { text: by.async || 0 }))));
          workers.replaceChildren(...queue.workers.flatMap((w) => w.models.map((s) => el("tr", {},
            el("td", { text: s.model }), el("td", { text: s.kind }), el("td", { text: s.state }), el("td", { text: `${s.occupancy} / ${s.capacity}` }), el("td", { text: s.batch_of || "" })))));
        }
      }
    } catch (e) {
      if (e.name !== "AbortError") stale.textContent = `not live: ${e.message}`;
    }
  })();
}

// -- models (admin) --------------------------------------------------------------------------------

async function modelsPage(view) {
  const list = el("div", { id: "models" });
  view.replaceChildren(el("h1", { text: "Models" }), list);
  async function load() {
    const models = await api("/v1/admin/models");
    list.replaceChildren(...models.data.map((m) => modelCard(m, load)));
  }
  await load();
}

function modelCard(m, reload) {
  const card = el("section", { class: "pane", "data-model": m.id });
  const message = el("p", { class: "muted" });
  const act = (path, body) => async () => {
    try {
      await api(`/v1/admin/models/${encodeURIComponent(m.id)}${path}`, { method: "POST", body });
      await reload();
    } catch (e) {
      message.className = "error";
      message.textContent = e.message;
    }
  };
  const versions = el("table", {}, el("thead", {}, el("tr", {}, ["Version", "State", "Aliases", "Loaded here", "Created by"].map((h) => el("th", { text: h })))),
    el("tbody", {}, m.versions.map((v) => el("tr", {}, el("td", { text: v.version }), el("td", { text: v.state }),
      el("td", { text: (v.aliases || []).join(", ") }), el("td", { text: v.loaded_here ? "yes" : "no" }), el("td", { text: v.created_by || "" })))));
  card.append(el("h2", { text: m.id }), el("div", { class: "scroll" }, versions));
  if (m.rollout) {
    const r = m.rollout;
    const arms = el("tbody");
    const reason = el("p", { class: "muted reason", text: r.reason || "" });
    const gates = (r.plan && r.plan.gates) || {};
    const showArms = (live) => {
      const f = live.figures || {};
      const cell = (v, digits = 1) => (v === null || v === undefined ? "" : typeof v === "number" ? v.toFixed(digits) : String(v));
      arms.replaceChildren(...["stable", "candidate"].filter((a) => f[a]).map((a) => el("tr", { "data-arm": a },
        el("td", { text: a === "stable" ? live.stable : live.candidate }), el("td", { text: f[a].requests }), el("td", { text: f[a].errors }),
        el("td", { text: cell(f[a].error_rate * 100) + " %" }), el("td", { text: cell(f[a].p50_latency_ms) }),
        el("td", { text: cell(f[a].p99_latency_ms) }), el("td", { text: cell(f[a].p99_ttft_ms) }))));
      reason.textContent = `${live.state}, ${live.percent}% of traffic${live.reason ? `: ${live.reason}` : ""}`;
    };
    showArms(r);
    // The gates' view now (the list's copy is written every few seconds), while this card is shown.
    const timer = setInterval(async () => {
      if (!card.isConnected) {
        clearInterval(timer);
        return;
      }
      try {
        showArms(await api(`/v1/admin/models/${encodeURIComponent(m.id)}/rollouts/current`));
      } catch (e) {
        if (e.status === 404) { // it ended meanwhile
          clearInterval(timer);
          reload().catch(() => {});
        }
      }
    }, 2000);
    state.timers.push(timer);
    card.append(
      el("h3", { text: `Rollout ${r.strategy}: ${r.stable} → ${r.candidate}, ${r.percent}% (${r.state})` }),
      el("div", { class: "scroll" }, el("table", { class: "arms" },
        el("thead", {}, el("tr", {}, ["Arm", "Requests", "Errors", "Error rate", "p50 ms", "p99 ms", "p99 TTFT ms"].map((h) => el("th", { text: h })))), arms)),
      el("p", { class: "muted gates", text: `gates: error rate ≤ ${(gates.max_error_rate ?? 0) * 100} %` +
        (gates.max_p99_latency_ms ? `, p99 ≤ ${gates.max_p99_latency_ms} ms` : "") + (gates.max_ttft_p99_ms ? `, p99 TTFT ≤ ${gates.max_ttft_p99_ms} ms` : "") +
        (gates.max_latency_ratio ? `, median ≤ ${gates.max_latency_ratio}× stable` : "") + `, at least ${gates.min_requests} requests` +
        (gates.min_feedback_score !== null && gates.min_feedback_score !== undefined ? `, feedback ≥ ${gates.min_feedback_score}` : "") }),
      reason,
      el("div", { class: "row" },
        el("button", { type: "button", class: "promote", text: "Promote", onclick: act("/rollouts/current/promote", { reason: "promoted from the console" }) }),
        el("button", { type: "button", class: "secondary rollback", text: "Roll back", onclick: act("/rollouts/current/rollback", { reason: "rolled back from the console" }) })));
  } else if (m.versions.length > 1) {
    const candidate = select(m.versions.map((v) => v.version), { "aria-label": "Candidate" });
    const percent = el("input", { type: "number", min: 1, max: 100, value: "10", "aria-label": "Percent" });
    card.append(el("div", { class: "row" }, field("Candidate", candidate), field("Percent", percent),
      el("button", { type: "button", class: "start-rollout", text: "Start canary", onclick: () => act("/rollouts", { strategy: "canary", candidate: candidate.value, percent: Number(percent.value) })() })));
  }
  card.append(message);
  return card;
}

// -- tenants and keys (admin) ----------------------------------------------------------------------

async function tenantsPage(view) {
  const tenants = el("tbody");
  const keys = el("section", { id: "keys" });
  const name = el("input", { id: "tenant-name", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]{0,127}" });
  const tier = select(["free", "standard", "premium"], { id: "tenant-tier" });
  const message = el("p", { role: "status", id: "tenant-message" });
  async function load() {
    const listed = await api("/v1/admin/tenants");
    tenants.replaceChildren(...listed.data.map((t) => el("tr", { "data-tenant": t.id },
      el("td", { text: t.name }), el("td", {}, tierSelect(t, message)), el("td", { text: t.id }),
      el("td", {}, el("button", { type: "button", class: "secondary", text: "Keys", onclick: () => keysOf(keys, t) })))));
  }
  const form = el("form", {
    class: "grid",
    onsubmit: async (event) => {
      event.preventDefault();
      try {
        const t = await api("/v1/admin/tenants", { method: "POST", body: { name: name.value, tier: tier.value } });
        message.className = "ok";
        message.textContent = `created tenant ${t.name}`;
        await load();
        keysOf(keys, t);
      } catch (e) {
        message.className = "error";
        message.textContent = e.message;
      }
    },
  }, field("Name", name), field("Tier", tier), el("button", { type: "submit", id: "create-tenant", text: "Create tenant" }));
  view.replaceChildren(el("h1", { text: "Tenants and keys" }), form, message,
    el("div", { class: "scroll" }, el("table", { id: "tenants" }, el("thead", {}, el("tr", {}, ["Name", "Tier", "Id", ""].map((h) => el("th", { text: h })))), tenants)), keys);
  await load();
}

function tierSelect(tenant, message) {
  const tier = select(["free", "standard", "premium"], { "aria-label": `Tier of ${tenant.name}`, class: "tier" });
  tier.value = tenant.tier;
  tier.addEventListener("change", async () => {
    try {
      const changed = await api(`/v1/admin/tenants/${tenant.id}`, { method: "PATCH", body: { tier: tier.value } });
      message.className = "ok";
      message.textContent = `${changed.name} is now ${changed.tier}`;
    } catch (e) {
      message.className = "error";
      message.textContent = e.message;
      tier.value = tenant.tier;
    }
  });
  return tier;
}

async function keysOf(target, tenant) {
  const rows = el("tbody");
  const name = el("input", { id: "key-name", value: "console" });
  const secret = el("div", { id: "new-key" });
  async function load() {
    const listed = await api(`/v1/admin/tenants/${tenant.id}/keys`);
    rows.replaceChildren(...listed.data.map((k) => el("tr", { "data-key": k.id },
      el("td", { text: k.name }), el("td", { text: k.id }), el("td", { text: k.revoked_at ? "revoked" : "active" }),
      el("td", {}, k.revoked_at ? "" : el("button", {
        type: "button", class: "secondary revoke", text: "Revoke",
        onclick: async () => {
          if (!window.confirm(`Revoke the key ${k.name} (${k.id})? Clients using it stop working.`)) return;
          try {
            await api(`/v1/admin/keys/${encodeURIComponent(k.id)}`, { method: "DELETE" });
            await load();
          } catch (e) {
            secret.replaceChildren(el("p", { class: "error", role: "alert", text: e.message }));
          }
        },
      })))));
  }
  const form = el("form", {
    class: "row",
    onsubmit: async (event) => {
      event.preventDefault();
      try {
        const k = await api(`/v1/admin/tenants/${tenant.id}/keys`, { method: "POST", body: { name: name.value } });
        secret.replaceChildren(el("div", { class: "secret" }, "The new key, shown once: ", el("code", { id: "secret", text: k.key })));
        await load();
      } catch (e) {
        secret.replaceChildren(el("p", { class: "error", role: "alert", text: e.message }));
      }
    },
  }, field("Key name", name), el("button", { type: "submit", id: "create-key", text: "Create key" }));
  const limitNames = ["requests_per_minute", "tokens_per_minute", "tokens_per_day", "images_per_day", "guard_blocks_per_hour"];
  const limitInputs = Object.fromEntries(limitNames.map((n) => [n, el("input", { type: "number", min: 1, class: "limit", "data-limit": n,
    placeholder: "unlimited", value: tenant.limits && tenant.limits[n] ? String(tenant.limits[n]) : "" })]));
  const limitsMessage = el("p", { role: "status", id: "limits-message" });
  const limitsForm = el("form", {
    class: "grid", id: "limits",
    onsubmit: async (event) => {
      event.preventDefault();
      const limits = Object.fromEntries(limitNames.map((n) => [n, limitInputs[n].value ? Number(limitInputs[n].value) : null]));
      try {
        await api(`/v1/admin/tenants/${tenant.id}`, { method: "PATCH", body: { limits } });
        limitsMessage.className = "ok";
        limitsMessage.textContent = `limits of ${tenant.name} saved`;
      } catch (e) {
        limitsMessage.className = "error";
        limitsMessage.textContent = e.message;
      }
    },
  }, limitNames.map((n) => field(n.replace(/_/g, " "), limitInputs[n])), el("button", { type: "submit", id: "save-limits", text: "Save limits" }));
  target.replaceChildren(el("h2", { text: `Limits of ${tenant.name}` }), limitsForm, limitsMessage,
    el("h2", { text: `Keys of ${tenant.name}` }), form, secret,
    el("div", { class: "scroll" }, el("table", {}, el("thead", {}, el("tr", {}, ["Name", "Id", "State", ""].map((h) => el("th", { text: h })))), rows)));
  await load();
}

// -- feedback review --------------------------------------------------------------------------------

function lastUserText(prompt) {
  if (typeof prompt === "string") return prompt;
  const users = (prompt || []).filter((m) => m.role === "user");
  const content = users.length ? users[users.length - 1].content : "";
  return typeof content === "string" ? content : JSON.stringify(content);
}

async function reviewPage(view) {
  const list = el("div", { id: "review", "aria-live": "polite" });
  const done = el("p", { id: "reviewed", role: "status", class: "muted" });
  let reviewed = 0;
  async function load() {
    const queue = await api("/v1/admin/feedback/queue?limit=20");
    if (!queue.data.length) {
      list.replaceChildren(el("p", { class: "muted", text: "Nothing to review: every recent answer is rated." }));
      return;
    }
    list.replaceChildren(...queue.data.map((c) => {
      const correction = el("textarea", { class: "correction", "aria-label": "Correction", placeholder: "What it should have said (optional)" });
      const card = el("section", { class: "pane", "data-response": c.response_id });
      const rate = (rating) => async () => {
        const body = { response_id: c.response_id, rating };
        if (correction.value.trim()) body.correction = correction.value;
        try {
          await api("/v1/feedback", { method: "POST", body });
          card.remove();
          reviewed += 1;
          done.textContent = `${reviewed} rated`;
          if (!list.children.length) await load();
        } catch (e) {
          card.append(el("p", { class: "error", role: "alert", text: e.message }));
        }
      };
      card.append(
        el("h3", { text: `${c.version || c.model} · ${when(c.created_at)}` }),
        el("p", { class: "muted", text: "Asked" }), el("pre", { class: "asked", text: lastUserText(c.prompt) }),
        el("p", { class: "muted", text: "Answered" }), el("pre", { class: "answered", text: (c.output || []).join("\n---\n") }),
        correction,
        el("div", { class: "row" },
          el("button", { type: "button", class: "good", text: "Good", onclick: rate(1) }),
          el("button", { type: "button", class: "secondary bad", text: "Bad", onclick: rate(-1) })));
      return card;
    }));
  }
  view.replaceChildren(el("h1", { text: "Review answers" }),
    el("p", { class: "muted", text: "Rate recent answers of this tenant; a correction becomes the target when a dataset is built from feedback." }),
    done, list);
  await load();
}

// -- fine-tuning, datasets and guards ------------------------------------------------------------------

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return node;
}

// A line chart, drawn as SVG by hand (no library): one or more named series of (x, y) points,
// the y axis from 0 (or the lowest value) to the highest, its ends labelled; `time` x values are
// unix seconds shown as clock times. A legend names the series.
function lineChart(series, { label, width = 480, height = 180, time = false, xRange = null } = {}) {
  if (!Array.isArray(series) || (series.length && !series[0].points)) series = [{ name: label, points: series }];
  const figure = el("figure", { class: "chart-box" });
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, class: "chart" });
  figure.append(el("figcaption", { text: label }), chart);
  const all = series.flatMap((s) => s.points.filter((p) => p[1] !== null && p[1] !== undefined));
  if (!all.length) {
    figure.append(el("p", { class: "muted", text: "no data yet" }));
    return figure;
  }
  const pad = 40;
  const xs = all.map((p) => p[0]);
  const ys = all.map((p) => p[1]);
  const [x0, x1] = xRange || [Math.min(...xs), Math.max(...xs)];
  const [y0, y1] = [Math.min(0, ...ys), Math.max(...ys)];
  const sx = (x) => pad + ((x - x0) / (x1 - x0 || 1)) * (width - 2 * pad);
  const sy = (y) => height - pad - ((y - y0) / (y1 - y0 || 1)) * (height - 2 * pad);
  chart.append(
    svg("line", { x1: pad, y1: height - pad, x2: width - pad, y2: height - pad, class: "axis" }),
    svg("line", { x1: pad, y1: pad, x2: pad, y2: height - pad, class: "axis" }));
  series.forEach((s, i) => {
    const points = s.points.filter((p) => p[1] !== null && p[1] !== undefined);
    if (points.length) chart.append(svg("polyline", { points: points.map((p) => `${sx(p[0])},${sy(p[1])}`).join(" "), class: `series series-${i}`, "data-series": s.name }));
  });
  const text = (x, y, value, anchor) => {
    const t = svg("text", { x, y, "text-anchor": anchor, class: "tick" });
    t.textContent = value;
    return t;
  };
  const xLabel = (x) => (time ? new Date(x * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : String(x));
  chart.append(text(pad - 4, sy(y1) + 4, Number(y1.toPrecision(3)).toString(), "end"), text(pad - 4, sy(y0) + 4, Number(y0.toPrecision(3)).toString(), "end"),
    text(sx(x0), height - pad + 16, xLabel(x0), "middle"), text(sx(x1), height - pad + 16, xLabel(x1), "middle"));
  if (series.length > 1) figure.append(el("p", { class: "legend" }, series.map((s, i) => el("span", { class: `key series-${i}`, text: s.name }))));
  return figure;
}

// -- usage -----------------------------------------------------------------------------------------

async function usagePage(view) {
  const windowSelect = select(["1h", "6h", "24h"], { id: "usage-window", "aria-label": "Window" });
  const modelSelect = select([""], { id: "usage-model", "aria-label": "Model" });
  const tenantSelect = select([""], { id: "usage-tenant", "aria-label": "Tenant", hidden: !state.me.admin });
  const totals = el("p", { id: "usage-totals", role: "status" });
  const charts = el("div", { class: "charts", id: "usage-charts" });
  const monitors = el("section", { id: "monitors" });
  async function load() {
    const query = new URLSearchParams({ window: windowSelect.value });
    if (modelSelect.value) query.set("model", modelSelect.value);
    if (tenantSelect.value) query.set("tenant", tenantSelect.value);
    const usage = await api(`/v1/usage?${query}`);
    for (const [target, names] of [[modelSelect, usage.models], [tenantSelect, usage.tenants]]) {
      const chosen = target.value;
      target.replaceChildren(el("option", { value: "", text: "all" }), ...names.map((n) => el("option", { value: n, text: n })));
      target.value = chosen;
    }
    const d = usage.data;
    const at = (f) => d.map((b) => [b.start, f(b)]);
    const span = { time: true, xRange: [d[0].start, d[d.length - 1].start] };
    const sum = (f) => d.reduce((n, b) => n + f(b), 0);
    totals.textContent = `${sum((b) => b.requests)} requests, ${sum((b) => b.errors)} errors, ${sum((b) => b.completion_tokens)} tokens out, ${sum((b) => b.cache_hits)} cache hits in the last ${usage.window}`;
    charts.replaceChildren(
      lineChart([{ name: "requests", points: at((b) => b.requests) }, { name: "errors", points: at((b) => b.errors) }], { label: "Requests and errors", ...span }),
      lineChart(["p50", "p95", "p99"].map((q) => ({ name: q, points: at((b) => b.latency_ms[q]) })), { label: "Latency (ms)", ...span }),
      lineChart(["p50", "p95"].map((q) => ({ name: q, points: at((b) => b.ttft_ms[q]) })), { label: "Time to first token (ms)", ...span }),
      lineChart([{ name: "out", points: at((b) => b.completion_tokens) }, { name: "in", points: at((b) => b.prompt_tokens) }], { label: "Tokens", ...span }),
      lineChart([{ name: "waiting", points: at((b) => b.queue_depth) }], { label: "Queue depth", ...span }),
      lineChart([{ name: "cache hits", points: at((b) => b.cache_hits) }], { label: "Cache hits", ...span }));
  }
  for (const control of [windowSelect, modelSelect, tenantSelect]) control.addEventListener("change", () => load().catch((e) => showError(totals, e)));
  view.replaceChildren(el("h1", { text: "Usage" }),
    el("div", { class: "row" }, field("Window", windowSelect), field("Model", modelSelect), state.me.admin ? field("Tenant", tenantSelect) : null),
    totals, charts, monitors);
  await load();
  every(10000, () => load().catch(() => {}));
  if (state.me.admin) {
    const listed = await api("/v1/admin/monitors").catch(() => null);
    if (listed && listed.data) {
      const columns = ["n", "error_rate", "empty_rate", "refusal_rate", "mean_output_tokens", "distinct_2", "feedback_n", "feedback_mean_score"];
      const shown = (v) => (typeof v === "number" && !Number.isInteger(v) ? v.toFixed(3) : v === null || v === undefined ? "" : String(v));
      const rows = listed.data.flatMap((m) => Object.entries(m.quality || {}).map(([version, q]) => el("tr", {},
        el("td", { text: version }), columns.map((c) => el("td", { text: shown(q[c]) })),
        el("td", { text: m.drift && m.drift.p_value !== null ? `p ${shown(m.drift.p_value)}${m.drift.alert ? " (alert)" : ""}` : "" }))));
      monitors.replaceChildren(el("h2", { text: "Quality and drift" }), el("div", { class: "scroll" }, el("table", { id: "monitor-figures" },
        el("thead", {}, el("tr", {}, ["Version", ...columns, "drift (MMD test)"].map((h) => el("th", { text: h })))), el("tbody", {}, rows))));
    }
  }
}

async function learningPage(view) {
  const jobs = el("tbody");
  const detail = el("section", { id: "tuning-detail", "aria-live": "polite" });
  const datasets = el("tbody");
  const listed = await api("/v1/fine_tuning/jobs?limit=50");
  jobs.replaceChildren(...listed.data.map((j) => el("tr", { "data-tuning": j.id },
    el("td", {}, el("button", { type: "button", class: "secondary", text: j.id, onclick: () => tuningDetail(detail, j) })),
    el("td", { text: j.status }), el("td", { text: j.model }), el("td", { text: j.fine_tuned_model || "" }),
    el("td", { text: when(j.created_at) }))));
  view.replaceChildren(el("h1", { text: "Fine-tuning and data" }),
    el("h2", { text: "Fine-tuning jobs" }),
    el("div", { class: "scroll" }, el("table", { id: "tuning-jobs" }, el("thead", {}, el("tr", {}, ["Job", "Status", "Base", "Model", "Created"].map((h) => el("th", { text: h })))), jobs)),
    detail);
  if (state.me.admin) {
    const found = await api("/v1/admin/datasets");
    datasets.replaceChildren(...found.data.map((d) => el("tr", { "data-dataset": d.id },
      el("td", {}, d.status === "active" ? el("button", { type: "button", class: "secondary", text: d.id, onclick: () => datasetRows(rowsView, d) }) : d.id),
      el("td", { text: d.status }), el("td", { text: d.rows }),
      el("td", { text: Object.entries((d.manifest && d.manifest.counts) || {}).map(([k, v]) => `${k} ${v}`).join(" · ") }),
      el("td", { text: d.sha256.slice(0, 12) }))));
    const rowsView = el("section", { id: "dataset-rows", "aria-live": "polite" });
    view.append(el("h2", { text: "Datasets" }),
      el("div", { class: "scroll" }, el("table", { id: "datasets" }, el("thead", {}, el("tr", {}, ["Dataset", "Status", "Rows", "Rows after each step", "Hash"].map((h) => el("th", { text: h })))), datasets)),
      rowsView);
  }
}

function lineageText(lineage) {
  if (!lineage) return "";
  if (lineage.source === "file") return `file ${lineage.file || ""} line ${lineage.line ?? ""}`;
  return Object.entries(lineage).map(([k, v]) => `${k} ${v}`).join(" · ");
}

async function datasetRows(target, dataset) {
  const page = await api(`/v1/admin/datasets/${encodeURIComponent(dataset.id)}/rows?limit=20`);
  target.replaceChildren(el("h3", { text: `${dataset.id}: the first ${page.data.length} of ${page.total} rows, with where each came from` }),
    el("div", { class: "scroll" }, el("table", { class: "rows" },
      el("thead", {}, el("tr", {}, ["#", "Split", "Asked", "Answer learned", "Lineage"].map((h) => el("th", { text: h })))),
      el("tbody", {}, page.data.map((r) => el("tr", {},
        el("td", { text: r.index }), el("td", { text: r.split }), el("td", { text: lastUserText(r.messages) }),
        el("td", { text: r.messages.length ? r.messages[r.messages.length - 1].content : "" }),
        el("td", { class: "lineage", text: lineageText(r.lineage) })))))));
}

async function tuningDetail(target, job) {
  const events = await api(`/v1/fine_tuning/jobs/${job.id}/events?limit=1000`);
  const losses = events.data.filter((e) => e.type === "metrics" && e.data && e.data.train_loss !== undefined)
    .map((e) => [e.data.step, e.data.train_loss]).sort((a, b) => a[0] - b[0]);
  const evaluation = job.result && job.result.evaluation;
  target.replaceChildren(el("h2", { text: `${job.id}: ${job.status}` }),
    lineChart(losses, { label: `Training loss by step (${job.id})` }),
    el("p", { class: "muted", text: job.result && job.result.eval_loss !== null && job.result.eval_loss !== undefined
      ? `eval loss ${job.result.eval_loss} against the base's ${job.result.base_eval_loss}` : "no eval split" }),
    el("h3", { text: "Evaluation gate" }), el("pre", { text: evaluation ? JSON.stringify(evaluation, null, 2) : "not yet" }),
    el("h3", { text: "Events" }), el("ol", { reversed: true }, events.data.map((e) => el("li", { text: `${when(e.created_at)} ${e.message}` }))));
}

async function guardsPage(view) {
  const rows = el("tbody");
  const action = select(["", "flag", "redact", "block"], { id: "audit-action", "aria-label": "Action" });
  async function load() {
    const query = new URLSearchParams({ limit: "100" });
    if (action.value) query.set("action", action.value);
    const audit = await api(`/v1/admin/audit?${query}`);
    rows.replaceChildren(...audit.data.map((e) => el("tr", {},
      el("td", { text: when(e.created_at) }), el("td", { text: e.tenant }), el("td", { text: e.stage }), el("td", { text: e.scanner }),
      el("td", { text: e.category }), el("td", { text: Number(e.score).toFixed(2) }), el("td", { text: e.action }), el("td", { text: e.request_id }))));
  }
  action.addEventListener("change", () => load().catch((e) => showError(rows, e)));
  view.replaceChildren(el("h1", { text: "Guard audit" }), el("div", { class: "row" }, field("Action", action)),
    el("div", { class: "scroll" }, el("table", { id: "audit" }, el("thead", {}, el("tr", {}, ["When", "Tenant", "Stage", "Scanner", "Category", "Score", "Action", "Request"].map((h) => el("th", { text: h })))), rows)));
  await load();
}

// -- routing ---------------------------------------------------------------------------------------

const PAGES = {
  playground: { render: playgroundPage },
  usage: { render: usagePage },
  review: { render: reviewPage, admin: true },
  images: { render: imagesPage },
  jobs: { render: jobsPage },
  queue: { render: queuePage, admin: true },
  models: { render: modelsPage, admin: true },
  tenants: { render: tenantsPage, admin: true },
  learning: { render: learningPage },
  guards: { render: guardsPage, admin: true },
};

// One page renders at a time, in the order asked: a slow page never paints over a newer one.
let routing = Promise.resolve();

function route() {
  state.routeAbort.abort();
  routing = routing.then(render, render);
  return routing;
}

async function render() {
  state.timers.forEach(clearInterval);
  state.timers = [];
  state.routeAbort = new AbortController();
  const view = document.getElementById("view");
  if (!state.key) return signInPage(view);
  if (!state.me) {
    try {
      await whoAmI();
    } catch (e) {
      sessionStorage.removeItem(KEY);
      state.key = null;
      return signInPage(view, e.status === 401 ? "Sign in again: the key was not accepted." : e.message);
    }
  }
  const [name, sub] = location.hash.replace(/^#\/?/, "").split("/");
  const page = PAGES[name] ? name : "playground";
  for (const link of document.querySelectorAll("nav a")) {
    if (link.getAttribute("href") === `#/${page}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (PAGES[page].admin && !state.me.admin) {
    view.replaceChildren(el("h1", { text: "Not for this key" }), el("p", { class: "error", role: "alert", text: "This page needs an admin key." }));
    return;
  }
  const params = new URLSearchParams();
  if (name === "jobs" && sub) params.set("job", sub);
  view.replaceChildren(el("p", { class: "muted", text: "loading…" }));
  try {
    await PAGES[page].render(view, params);
  } catch (e) {
    if (e.name !== "AbortError") showError(view, e); // aborted: another page is opening
  }
  if (!view.contains(document.activeElement)) view.focus({ preventScroll: true }); // keyboard users start at the page
}

window.addEventListener("hashchange", () => {
  if (location.hash === "" || location.hash.startsWith("#/")) route(); // "#view" is the skip link, not a page
});
window.addEventListener("DOMContentLoaded", () => {
  document.getElementById("signout").addEventListener("click", signOut);
  document.querySelector(".skip").addEventListener("click", (event) => {
    event.preventDefault();
    document.getElementById("view").focus();
  });
  route();
});
