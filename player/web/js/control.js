// Control link: the viewer's push WebSocket to a connection server. It finds a
// server through /connect, says hello with device facts, keeps the identity
// token the server hands out, and reconnects with jittered backoff so a failed
// server does not cause a reconnect flood. It remembers the last offset and
// epoch of every group it hears from; after a reconnect it sends resume so
// the server replays what was missed (or answers recovered:false, and the
// re-sent watch brings current state back).
const TOKEN_KEY = "backchannel.token";
const MAX_QUEUED = 50;

export class ControlLink {
  constructor({ onMessage, onState, hello = {} } = {}) {
    this.onMessage = onMessage || (() => {});
    this.onState = onState || (() => {});
    this.hello = hello;
    this.ws = null;
    this.sid = null;
    this.uid = null;
    this.attempt = 0;
    this.closed = false;
    this.queue = []; // frames sent while disconnected, flushed after welcome
    this.afterWelcome = []; // frames re-sent on every (re)connect, e.g. watch
    this.prevSid = null; // sid of the last link, named in resume
    this.offsets = {}; // group id → last off received
    this.epochs = {}; // group id → ep of that offset
  }

  // track remembers where each group's stream of messages got to.
  track(msg) {
    if (typeof msg.g !== "string" || typeof msg.off !== "number") return;
    if (!(msg.g in this.offsets) && Object.keys(this.offsets).length >= 32) return;
    if (this.epochs[msg.g] === msg.ep && this.offsets[msg.g] >= msg.off) return;
    this.offsets[msg.g] = msg.off;
    this.epochs[msg.g] = msg.ep;
  }

  start() {
    this.closed = false;
    this.connect();
  }

  stop() {
    this.closed = true;
    clearTimeout(this.retryTimer);
    if (this.ws) this.ws.close(1000, "bye");
  }

  // send delivers a frame now, or after the next welcome if the link is down.
  send(msg) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN && this.sid) {
      this.ws.send(JSON.stringify(msg));
    } else {
      this.queue.push(msg);
      // While the link is down keep what matters (votes, watch) and let old
      // telemetry go: it describes a past that a later report sums up anyway.
      while (this.queue.length > MAX_QUEUED) {
        const i = this.queue.findIndex((m) => m.t === "telemetry");
        this.queue.splice(i >= 0 ? i : 0, 1);
      }
    }
  }

  // sendOnEveryConnect registers a frame that must follow each welcome, such as
  // the stream being watched, so a reconnect restores the link's state.
  sendOnEveryConnect(msg) {
    this.afterWelcome.push(msg);
    this.send(msg);
  }

  async connect() {
    this.onState("connecting");
    let url;
    try {
      const res = await fetch("/connect", { cache: "no-store" });
      if (!res.ok) throw new Error(`/connect answered ${res.status}`);
      url = (await res.json()).url;
    } catch (err) {
      this.scheduleReconnect(`connect lookup failed: ${err.message}`);
      return;
    }
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (err) {
      this.scheduleReconnect(err.message);
      return;
    }
    this.ws = ws;
    this.sid = null;
    ws.onopen = () => {
      ws.send(JSON.stringify(this.helloFrame()));
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      this.track(msg);
      if (msg.t === "welcome" && "recovered" in msg) {
        // The answer to resume: replayed messages came before it.
        this.onMessage(msg);
        return;
      }
      if (msg.t === "welcome") {
        this.attempt = 0;
        const resumeFrom = this.prevSid;
        this.sid = msg.sid;
        this.uid = msg.uid;
        if (msg.token) {
          try {
            localStorage.setItem(TOKEN_KEY, msg.token);
          } catch {}
        }
        this.onState("open");
        this.prevSid = msg.sid;
        if (resumeFrom && Object.keys(this.offsets).length > 0) {
          ws.send(JSON.stringify({ t: "resume", sid: resumeFrom, offsets: this.offsets, epochs: this.epochs }));
        }
        const pending = this.afterWelcome.concat(this.queue.filter((m) => !this.afterWelcome.includes(m)));
        this.queue = [];
        for (const m of pending) ws.send(JSON.stringify(m));
      }
      this.onMessage(msg);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.sid = null;
      if (this.closed) {
        this.onState("closed");
        return;
      }
      this.scheduleReconnect(`closed ${ev.code} ${ev.reason || ""}`.trim());
    };
  }

  helloFrame() {
    let token;
    try {
      token = localStorage.getItem(TOKEN_KEY) || undefined;
    } catch {}
    const conn = navigator.connection;
    return {
      t: "hello",
      token,
      ua: navigator.userAgent,
      lang: navigator.language,
      screen: { w: screen.width, h: screen.height, dpr: window.devicePixelRatio },
      net: conn ? { type: conn.type, effective: conn.effectiveType, downlink: conn.downlink, rtt: conn.rtt } : undefined,
      player: "backchannel-web/1",
      ...this.hello,
    };
  }

  scheduleReconnect(reason) {
    this.onState("reconnecting", reason);
    // Exponential backoff capped at 15 s, with a random spread of 1–2 s on
    // top so that the links of a failed server come back spread out.
    const base = Math.min(15000, 500 * 2 ** Math.min(this.attempt, 5));
    const delay = base + 1000 + Math.random() * 1000;
    this.attempt++;
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }
}
