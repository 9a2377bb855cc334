// Telemetry: every few seconds the player reports what the viewer
// experienced over the last interval, as deltas with CMCD v2 key names and
// units (ms, kbps) plus WebRTC receive statistics. A gap in `sn` tells the
// server a report was lost.

export class Telemetry {
  constructor({ video, send, intervalMs = 5000 }) {
    this.video = video;
    this.send = send;
    this.intervalMs = intervalMs;
    this.sn = 0;
    this.pc = null;
    this.prev = null; // previous getStats snapshot
    this.errors = [];
    this.startRequestedAt = 0;
    this.startupMs = undefined;
    this.startupSent = false;
    this.state = "s";
    this.playMs = 0;
    this.rebufferMs = 0;
    this.rebufferCount = 0;
    this.lastTick = performance.now();
    this.stalledSince = 0;
    this.watchVideo();
  }

  // attach starts measuring a new WebRTC session; startup delay runs from here
  // to the first decoded frame.
  attach(pc) {
    this.pc = pc;
    this.prev = null;
    if (this.startupMs === undefined) this.startRequestedAt = performance.now();
  }

  detach() {
    this.pc = null;
    this.prev = null;
  }

  error(code) {
    this.errors.push(String(code).slice(0, 64));
    if (this.errors.length > 10) this.errors.shift();
  }

  setState(s) {
    this.accumulate();
    this.state = s;
  }

  start() {
    this.timer = setInterval(() => this.report(), this.intervalMs);
  }

  stop() {
    clearInterval(this.timer);
  }

  watchVideo() {
    const v = this.video;
    v.addEventListener("playing", () => {
      if (this.startupMs === undefined && this.startRequestedAt) {
        this.startupMs = Math.round(performance.now() - this.startRequestedAt);
      }
      if (this.state === "r" && this.stalledSince) {
        this.accumulate();
      }
      this.stalledSince = 0;
      this.setState("p");
    });
    v.addEventListener("waiting", () => {
      if (this.state === "p") {
        this.rebufferCount++;
        this.stalledSince = performance.now();
        this.setState("r");
      }
    });
    v.addEventListener("pause", () => this.setState("a"));
    v.addEventListener("ended", () => this.setState("e"));
    v.addEventListener("error", () => {
      this.error(v.error ? `media:${v.error.code}` : "media");
      this.setState("f");
    });
  }

  // accumulate books the time since the last tick to the current state.
  accumulate() {
    const now = performance.now();
    const dt = now - this.lastTick;
    this.lastTick = now;
    if (this.state === "p") this.playMs += dt;
    if (this.state === "r") this.rebufferMs += dt;
  }

  async snapshot() {
    if (!this.pc) return null;
    const s = {
      at: performance.now(),
      bytes: 0,
      framesDecoded: 0,
      framesDropped: 0,
      freezeCount: 0,
      freezeMs: 0,
      lost: 0,
      received: 0,
      jbDelay: 0,
      jbEmitted: 0,
      rttMs: undefined,
      playoutNtpMs: undefined,
    };
    const stats = await this.pc.getStats();
    stats.forEach((r) => {
      if (r.type === "inbound-rtp") {
        s.bytes += r.bytesReceived || 0;
        s.lost += Math.max(0, r.packetsLost || 0);
        s.received += r.packetsReceived || 0;
        if (r.kind === "video") {
          s.framesDecoded = r.framesDecoded || 0;
          s.framesDropped = r.framesDropped || 0;
          s.freezeCount = r.freezeCount || 0;
          s.freezeMs = (r.totalFreezesDuration || 0) * 1000;
          s.jbDelay = r.jitterBufferDelay || 0;
          s.jbEmitted = r.jitterBufferEmittedCount || 0;
          if (r.estimatedPlayoutTimestamp) s.playoutNtpMs = r.estimatedPlayoutTimestamp;
        }
      }
      if (r.type === "candidate-pair" && r.nominated && r.currentRoundTripTime !== undefined) {
        s.rttMs = r.currentRoundTripTime * 1000;
      }
    });
    return s;
  }

  async report() {
    this.accumulate();
    const iv = this.intervalMs;
    const msg = { t: "telemetry", sn: ++this.sn, iv, sta: this.state };
    const cur = await this.snapshot().catch(() => null);
    if (cur && this.prev) {
      const secs = (cur.at - this.prev.at) / 1000;
      const kbps = secs > 0 ? Math.round(((cur.bytes - this.prev.bytes) * 8) / 1000 / secs) : 0;
      msg.mtp = kbps;
      msg.pb = kbps;
      const dLost = cur.lost - this.prev.lost;
      const dRecv = cur.received - this.prev.received;
      const dEmit = cur.jbEmitted - this.prev.jbEmitted;
      msg.dfa = Math.max(0, cur.framesDropped - this.prev.framesDropped);
      msg.rtc = {
        frz_n: Math.max(0, cur.freezeCount - this.prev.freezeCount),
        frz_ms: Math.max(0, Math.round(cur.freezeMs - this.prev.freezeMs)),
        loss: dLost + dRecv > 0 ? Math.max(0, dLost) / (Math.max(0, dLost) + dRecv) : 0,
        jbd_ms: dEmit > 0 ? Math.round(((cur.jbDelay - this.prev.jbDelay) / dEmit) * 1000) : undefined,
        rtt_ms: cur.rttMs !== undefined ? Math.round(cur.rttMs) : undefined,
      };
      if (msg.rtc.jbd_ms !== undefined) msg.bl = msg.rtc.jbd_ms;
      if (cur.playoutNtpMs) {
        // NTP epoch is 1900; the sender's clock is the reference, so this is
        // glass-to-glass only when the clocks agree. Drop nonsense values.
        const ltc = Date.now() + 2208988800000 - cur.playoutNtpMs;
        if (ltc >= 0 && ltc < 60000) msg.ltc = Math.round(ltc);
      }
    }
    if (cur) this.prev = cur;
    msg.play_ms = Math.round(this.playMs);
    msg.rb_n = this.rebufferCount;
    msg.rb_ms = Math.round(this.rebufferMs);
    this.playMs = 0;
    this.rebufferMs = 0;
    this.rebufferCount = 0;
    if (this.startupMs !== undefined && !this.startupSent) {
      msg.msd = this.startupMs;
      this.startupSent = true;
    }
    if (this.errors.length) {
      msg.err = this.errors;
      this.errors = [];
    }
    this.send(msg);
    return msg;
  }
}
