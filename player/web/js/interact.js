// Interactions on the viewer page: polls (vote with one tap, bars that move,
// final results), broadcaster branding and notices. Votes are kept until the
// server acknowledges them and resent after every reconnect, so a vote made
// while the link was down, or whose ack was lost, still counts exactly once
// (the server keeps one vote per user per poll).
const PENDING_KEY = "backchannel.pendingVotes";

function loadPending() {
  try {
    return JSON.parse(localStorage.getItem(PENDING_KEY) || "{}");
  } catch {
    return {};
  }
}

export class Interactions {
  constructor({ link, stream, root }) {
    this.link = link;
    this.stream = stream;
    this.root = root; // element holding #branding, #notices, #polls
    this.polls = new Map(); // id → {poll, counts, total, final, mine}
    this.pending = loadPending(); // poll id → {poll, choice, id}
    this.branding = null;
    this.notices = [];
  }

  savePending() {
    try {
      localStorage.setItem(PENDING_KEY, JSON.stringify(this.pending));
    } catch {}
  }

  // handle takes every server message; it returns true when it used it.
  handle(msg) {
    switch (msg.t) {
      case "welcome":
        // A new link: resend what was never acknowledged.
        for (const v of Object.values(this.pending)) this.sendVote(v);
        return false;
      case "poll": {
        if (msg.stream !== this.stream) return true;
        const cur = this.polls.get(msg.id) || { counts: msg.choices.map(() => 0), total: 0, final: false };
        const pending = this.pending[msg.id];
        const mine = pending ? pending.choice : msg.choice !== undefined ? msg.choice : cur.mine;
        this.polls.set(msg.id, { ...cur, poll: msg, mine, final: msg.state === "closed" || cur.final });
        this.render();
        return true;
      }
      case "results": {
        const cur = this.polls.get(msg.poll);
        if (!cur) return true;
        // Latest state wins; a late non-final update never undoes a final one.
        if (cur.final && !msg.final) return true;
        Object.assign(cur, { counts: msg.counts, total: msg.total, final: msg.final });
        this.render();
        return true;
      }
      case "ack": {
        for (const [poll, v] of Object.entries(this.pending)) {
          if (v.id === msg.id) {
            delete this.pending[poll];
            const cur = this.polls.get(poll);
            if (cur) cur.acked = true;
          }
        }
        this.savePending();
        this.render();
        return true;
      }
      case "error":
        if (msg.id) {
          // The vote was refused (closed, not for us): stop resending it.
          for (const [poll, v] of Object.entries(this.pending)) {
            if (v.id === msg.id) {
              delete this.pending[poll];
              const cur = this.polls.get(poll);
              if (cur) cur.refused = msg.code;
            }
          }
          this.savePending();
          this.render();
          return true;
        }
        return false;
      case "branding":
        if (msg.stream !== this.stream) return true;
        this.branding = msg;
        this.render();
        return true;
      case "notice":
        this.notices.push({ ...msg, at: Date.now() });
        this.notices = this.notices.slice(-3);
        this.render();
        setTimeout(() => this.render(), 30000);
        return true;
    }
    return false;
  }

  vote(pollId, choice) {
    const cur = this.polls.get(pollId);
    if (!cur || cur.final) return;
    const v = { poll: pollId, choice, id: `v-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}` };
    this.pending[pollId] = v;
    this.savePending();
    cur.mine = choice;
    cur.acked = false;
    this.sendVote(v);
    this.render();
  }

  sendVote(v) {
    // Only on an open link: the next welcome resends everything pending.
    if (this.link.sid) this.link.send({ t: "vote", poll: v.poll, choice: v.choice, id: v.id });
  }

  render() {
    const b = this.root.querySelector("#branding");
    if (b) {
      b.replaceChildren();
      if (this.branding) {
        if (this.branding.logo_url) {
          const img = document.createElement("img");
          img.src = this.branding.logo_url;
          img.alt = "";
          b.append(img);
        }
        const title = document.createElement("strong");
        title.textContent = this.branding.title || "";
        b.append(title);
        for (const u of this.branding.upcoming || []) {
          const s = document.createElement("span");
          s.className = "info";
          s.textContent = `Next: ${u.title} · ${new Date(u.starts_at).toLocaleString()}`;
          b.append(s);
        }
      }
    }
    const n = this.root.querySelector("#notices");
    if (n) {
      n.replaceChildren(
        ...this.notices
          .filter((x) => Date.now() - x.at < 30000)
          .map((x) => {
            const d = document.createElement("div");
            d.className = `notice ${x.level || ""}`;
            d.textContent = x.text;
            return d;
          }),
      );
    }
    const p = this.root.querySelector("#polls");
    if (!p) return;
    const items = [...this.polls.values()].sort((a, b) => (a.final === b.final ? 0 : a.final ? 1 : -1)).slice(0, 3);
    p.replaceChildren(...items.map((cur) => this.renderPoll(cur)));
  }

  renderPoll(cur) {
    const { poll } = cur;
    const box = document.createElement("section");
    box.className = "panel poll";
    box.dataset.poll = poll.id;
    const h = document.createElement("h2");
    h.textContent = poll.question;
    box.append(h);
    poll.choices.forEach((label, i) => {
      const btn = document.createElement("button");
      btn.className = "choice" + (cur.mine === i ? " mine" : "");
      btn.disabled = cur.final;
      btn.dataset.choice = i;
      const pct = cur.total > 0 ? Math.round((100 * (cur.counts[i] || 0)) / cur.total) : 0;
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = `${pct}%`;
      const l = document.createElement("span");
      l.className = "label";
      l.textContent = label;
      const c = document.createElement("span");
      c.className = "count";
      c.textContent = `${cur.counts[i] || 0} · ${pct}%`;
      btn.append(bar, l, c);
      btn.addEventListener("click", () => this.vote(poll.id, i));
      box.append(btn);
    });
    const meta = document.createElement("p");
    meta.className = "meta";
    let state = cur.final ? "Final results" : poll.closes_at ? `Closes ${new Date(poll.closes_at).toLocaleTimeString()}` : "Open";
    if (cur.mine !== undefined && !cur.final) state += cur.acked === false ? " · sending your vote…" : " · your vote is counted";
    if (cur.refused) state += ` · vote refused (${cur.refused})`;
    meta.textContent = `${state} · ${cur.total} votes`;
    box.append(meta);
    return box;
  }
}
