// Studio: the audience of the stream (with live counts per group, which the
// poll target picker offers), poll creation, and live results streamed from
// /api/v1/polls/{id}/live with a per-group breakdown.
const KEY_STORE = "backchannel.apiKey";
const $ = (id) => document.getElementById(id);
const keyInput = $("apikey");
const streamInput = $("stream");
keyInput.value = new URLSearchParams(location.search).get("apikey") || localStorage.getItem(KEY_STORE) || "";

const state = { poll: null, live: null, results: null, by: "", audience: null };
window.backchannelStudio = state;

async function api(method, path, body) {
  const res = await fetch(`/api/v1${path}`, {
    method,
    headers: { Authorization: `Bearer ${keyInput.value}`, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  if (!res.ok) {
    const err = new Error((data && data.detail) || res.statusText);
    err.status = res.status;
    err.fields = data && data["invalid-params"];
    throw err;
  }
  return data;
}

const DIMS = ["country", "subdivision", "city", "continent", "asn", "device", "os", "browser", "lang", "edge"];

// refreshAudience reads the stream group's members by dimension and offers
// each value as a poll target, with its live count.
async function refreshAudience() {
  if (!keyInput.value) return;
  try {
    const g = await api("GET", `/groups/${encodeURIComponent("stream:" + streamInput.value)}?breakdown=${DIMS.join(",")}`);
    state.audience = g;
    $("audience-count").textContent = g.members;
    const select = $("poll-target");
    const chosen = select.value;
    const opts = [new Option(`everyone watching (${g.members})`, "")];
    for (const dim of DIMS) {
      const values = Object.entries((g.breakdown || {})[dim] || {}).sort((a, b) => b[1] - a[1]);
      for (const [value, n] of values) {
        if (!value) continue;
        opts.push(new Option(`${dim} = ${value} (${n})`, `${dim}=${JSON.stringify(value)}`));
      }
    }
    select.replaceChildren(...opts);
    select.value = [...select.options].some((o) => o.value === chosen) ? chosen : "";
    $("api-status").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    $("api-status").textContent = err.message;
  }
}

$("api-auth").addEventListener("submit", (ev) => {
  ev.preventDefault();
  localStorage.setItem(KEY_STORE, keyInput.value);
  refreshAudience();
});
setInterval(refreshAudience, 2000);
refreshAudience();

$("poll-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("poll-error").textContent = "";
  const body = {
    stream: streamInput.value,
    question: $("poll-question").value,
    choices: $("poll-choices").value.split("\n").map((s) => s.trim()).filter(Boolean),
  };
  const secs = Number($("poll-duration").value);
  if (secs > 0) body.duration_ms = secs * 1000;
  if ($("poll-target").value) body.where = $("poll-target").value;
  try {
    const poll = await api("POST", "/polls", body);
    follow(poll);
  } catch (err) {
    $("poll-error").textContent = err.fields ? err.fields.map((f) => `${f.name}: ${f.reason}`).join("; ") : err.message;
  }
});

$("poll-close").addEventListener("click", async () => {
  if (state.poll) await api("POST", `/polls/${state.poll.id}/close`).catch((err) => ($("poll-error").textContent = err.message));
});

$("results-by").addEventListener("change", () => {
  state.by = $("results-by").value;
  if (state.poll) follow(state.poll);
});

// follow shows a poll's live results: server-sent events read through fetch
// (EventSource cannot send the Authorization header).
async function follow(poll) {
  if (state.live) state.live.abort();
  state.poll = poll;
  state.results = poll.results || null;
  const ctl = new AbortController();
  state.live = ctl;
  $("results-panel").hidden = false;
  $("results-question").textContent = poll.question;
  renderResults();
  try {
    const res = await fetch(`/api/v1/polls/${poll.id}/live${state.by ? `?by=${state.by}` : ""}`, {
      headers: { Authorization: `Bearer ${keyInput.value}` },
      signal: ctl.signal,
    });
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, i);
        buf = buf.slice(i + 2);
        const data = event.split("\n").find((l) => l.startsWith("data: "));
        if (data) {
          state.results = JSON.parse(data.slice(6));
          renderResults();
        }
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") $("poll-error").textContent = `live results: ${err.message}`;
  }
}

function renderResults() {
  const r = state.results;
  const poll = state.poll;
  if (!poll) return;
  const counts = (r && r.counts) || poll.choices.map(() => 0);
  const total = (r && r.total) || 0;
  $("results-bars").replaceChildren(
    ...poll.choices.map((label, i) => {
      const row = document.createElement("div");
      row.className = "choice";
      row.dataset.choice = i;
      const pct = total ? Math.round((100 * counts[i]) / total) : 0;
      row.innerHTML = `<span class="bar" style="width:${pct}%"></span><span class="label"></span><span class="count"></span>`;
      row.querySelector(".label").textContent = label;
      row.querySelector(".count").textContent = `${counts[i]} · ${pct}%`;
      return row;
    }),
  );
  $("results-total").textContent = total;
  $("results-state").textContent = r && r.final ? "final results" : "live";
  $("poll-close").disabled = !!(r && r.final);
  const table = $("results-breakdown");
  const b = r && r.breakdown;
  if (!b) {
    table.tHead.replaceChildren();
    table.tBodies[0].replaceChildren();
    return;
  }
  const head = document.createElement("tr");
  for (const h of [b.dimension, ...poll.choices, "total"]) {
    const th = document.createElement("th");
    th.textContent = h;
    head.append(th);
  }
  table.tHead.replaceChildren(head);
  table.tBodies[0].replaceChildren(
    ...Object.entries(b.values)
      .sort((x, y) => y[1].total - x[1].total)
      .map(([value, v]) => {
        const tr = document.createElement("tr");
        for (const cell of [value, ...v.counts, v.total]) {
          const td = document.createElement("td");
          td.textContent = cell;
          tr.append(td);
        }
        return tr;
      }),
  );
}
