// Operator console: live streams and per-group QoE, read from /api/v1 with
// the operator key, refreshed every few seconds.
const KEY_STORE = "backchannel.apiKey";
const keyInput = document.getElementById("apikey");
const authStatus = document.getElementById("auth-status");
keyInput.value = localStorage.getItem(KEY_STORE) || "";

async function api(path) {
  const res = await fetch(`/api/v1${path}`, { headers: { Authorization: `Bearer ${keyInput.value}` } });
  if (!res.ok) {
    let detail = res.statusText;
    try {
      detail = (await res.json()).detail || detail;
    } catch {}
    throw new Error(`${res.status}: ${detail}`);
  }
  return res.json();
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "–" : String(text);
  return td;
}

function fill(id, rows) {
  const body = document.querySelector(`#${id} tbody`);
  body.replaceChildren(
    ...rows.map((cells) => {
      const tr = document.createElement("tr");
      tr.append(...cells.map(cell));
      return tr;
    }),
  );
}

const pct = (x) => (typeof x === "number" ? `${(x * 100).toFixed(2)}%` : undefined);

function listOf(v, key) {
  if (Array.isArray(v)) return v;
  return (v && v[key]) || [];
}

async function refresh() {
  try {
    const streams = listOf(await api("/streams"), "streams");
    fill(
      "streams",
      streams.map((s) => [
        s.name,
        s.protocol,
        (s.tracks || []).map((t) => t.codec).join(", "),
        s.started_at ? new Date(s.started_at).toLocaleTimeString() : undefined,
      ]),
    );
    const groups = listOf(await api("/groups"), "groups");
    const detailed = await Promise.all(groups.map((g) => api(`/groups/${encodeURIComponent(g.id)}`).catch(() => g)));
    fill(
      "groups",
      detailed.map((g) => {
        // The current window when it has reports, else the group's lifetime.
        const q = (g.qoe && (g.qoe.current || g.qoe.total)) || {};
        const p50 = q.startup_ms && q.startup_ms.p50;
        return [g.id, g.members, q.reports, pct(q.rebuffer_ratio), pct(q.freeze_ratio), pct(q.loss), p50 ? `${Math.round(p50)} ms` : undefined];
      }),
    );
    authStatus.textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    authStatus.textContent = err.message;
  }
}

document.getElementById("auth").addEventListener("submit", (ev) => {
  ev.preventDefault();
  localStorage.setItem(KEY_STORE, keyInput.value);
  refresh();
});
if (keyInput.value) refresh();
setInterval(() => keyInput.value && refresh(), 3000);
