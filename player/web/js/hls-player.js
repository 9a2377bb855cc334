// LL-HLS fallback for the viewer player. WHEP (WebRTC) comes first; when it
// cannot work here — no RTCPeerConnection, ICE that does not connect, a
// WHEP POST refused for a reason other than "not on air" (409) — the page
// switches to LL-HLS: hls.js over Media Source Extensions, or the video
// element's own HLS where the browser has one and is Safari (or has no
// MSE at all, as older iPhones). hls.js is third-party code fetched from
// npm at build time into /static/vendor/; a build without it still plays
// WHEP and says clearly why HLS cannot start.

const HLSJS_URL = "/static/vendor/hls.min.js";
const HLS_MIME = "application/vnd.apple.mpegurl";

// How long a WHEP session may take from its answer to a connected
// transport before the page gives WebRTC up (UDP blocked, unreachable ICE
// candidates). Loopback and ordinary networks connect in well under a
// second; browsers themselves wait about 30 s before "failed".
export const ICE_TIMEOUT_MS = 2000;

const params = new URLSearchParams(location.search);

// forcedReason says why WebRTC must not even be tried: the page asks for
// HLS (?transport=hls), or the browser has no WebRTC.
export function forcedReason() {
  if (params.get("transport") === "hls") return "requested";
  if (typeof window.RTCPeerConnection !== "function") return "no-webrtc";
  return "";
}

// whepFailureReason maps a failed WHEP attempt to a fallback reason, or ""
// when WebRTC should simply be retried (409: the stream is not on air, and
// HLS would not have it either).
export function whepFailureReason(err) {
  if (err && err.status === 409) return "";
  if (err && err.status) return `whep-${err.status}`;
  return "whep-error";
}

// watchICE calls onTimeout if pc is not connected within the timeout (or
// fails before it). It returns a function that cancels the watch.
export function watchICE(pc, onTimeout, ms = Number(params.get("ice_timeout")) || ICE_TIMEOUT_MS) {
  let done = false;
  const finish = (failed) => {
    if (done) return;
    done = true;
    clearTimeout(timer);
    pc.removeEventListener("connectionstatechange", check);
    if (failed) onTimeout();
  };
  const check = () => {
    const s = pc.connectionState;
    if (s === "connected") finish(false);
    else if (s === "failed") finish(true);
    else if (s === "closed") finish(false);
  };
  const timer = setTimeout(() => finish(pc.connectionState !== "connected"), ms);
  pc.addEventListener("connectionstatechange", check);
  check();
  return () => finish(false);
}

let hlsjsLoading = null;

// loadHlsJs loads the embedded hls.js once; it rejects with a clear message
// when this build does not carry it.
function loadHlsJs() {
  if (window.Hls) return Promise.resolve(window.Hls);
  if (!hlsjsLoading) {
    hlsjsLoading = new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = HLSJS_URL;
      s.async = true;
      s.onload = () =>
        window.Hls ? resolve(window.Hls) : reject(new Error("hls.js did not load"));
      s.onerror = () => {
        hlsjsLoading = null;
        reject(new Error("this build has no hls.js (run `make web` before building)"));
      };
      document.head.appendChild(s);
    });
  }
  return hlsjsLoading;
}

function isSafari() {
  const ua = navigator.userAgent;
  return /Safari\//.test(ua) && !/Chrome\/|Chromium\/|CriOS\/|Android/.test(ua);
}

function hasMSE() {
  return !!(window.ManagedMediaSource || window.MediaSource);
}

// HLSPlayer plays an LL-HLS URL into a video element and reports CMCD
// values for telemetry.
export class HLSPlayer {
  constructor(video, { onState = () => {}, onError = () => {} } = {}) {
    this.video = video;
    this.onState = onState;
    this.onError = onError;
    this.hls = null;
    this.url = "";
    this.engine = "";
    this.error = "";
    this.retryTimer = null;
    this.bytes = 0; // loaded since the last report
    this.log = []; // recent hls.js errors, for debugging
    this.lastReport = performance.now();
  }

  // chooseEngine picks native HLS on Safari or where MSE is missing, else
  // hls.js. ?hls=native|hlsjs overrides it (tests, debugging).
  chooseEngine() {
    const forced = params.get("hls");
    if (forced === "native" || forced === "hlsjs") return forced;
    const native = this.video.canPlayType(HLS_MIME) !== "";
    if (native && (isSafari() || !hasMSE())) return "native";
    return "hlsjs";
  }

  async start(url) {
    this.stop();
    this.url = url;
    this.error = "";
    this.engine = this.chooseEngine();
    if (this.engine === "native") {
      this.video.srcObject = null;
      this.video.src = url;
      this.video.play().catch(() => {});
      this.onState("native");
      return;
    }
    let Hls;
    try {
      Hls = await loadHlsJs();
    } catch (err) {
      this.fail(`hls:unavailable`, err.message);
      return;
    }
    if (!Hls.isSupported()) {
      this.fail("hls:unsupported", "this browser can play neither WebRTC nor HLS");
      return;
    }
    if (this.url !== url) return; // stopped or restarted meanwhile
    // Players start at the newest independent part before the live edge
    // minus PART-HOLD-BACK (the packager flags one at every keyframe), and
    // catch up gently when they fall behind.
    const hls = new Hls({ lowLatencyMode: true, backBufferLength: 30, enableWorker: true, maxLiveSyncPlaybackRate: 1.2 });
    this.hls = hls;
    hls.on(Hls.Events.FRAG_LOADED, (_ev, data) => {
      const st = data.part ? data.part.stats : data.frag.stats;
      if (st) this.bytes += st.loaded || 0;
    });
    hls.on(Hls.Events.ERROR, (_ev, data) => {
      const media = this.video.error ? ` (media error ${this.video.error.code}: ${this.video.error.message})` : "";
      this.log.push(`${data.fatal ? "fatal " : ""}${data.details}${data.error ? ": " + data.error.message : ""}${media}`);
      if (this.log.length > 20) this.log.shift();
      if (!data.fatal) return;
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR) {
        hls.recoverMediaError();
        return;
      }
      // A packager restarted, a segment vanished: reload from the start.
      this.onError(`hls:${data.details}`);
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => this.url === url && this.start(url), 2000);
    });
    hls.on(Hls.Events.MANIFEST_PARSED, () => this.video.play().catch(() => {}));
    this.video.srcObject = null;
    hls.attachMedia(this.video);
    hls.loadSource(url);
    this.onState("hls.js");
  }

  fail(code, message) {
    this.error = message;
    this.onError(code);
    this.onState("error", message);
  }

  stop() {
    clearTimeout(this.retryTimer);
    this.url = "";
    if (this.hls) {
      this.hls.destroy();
      this.hls = null;
    }
    if (this.engine === "native") {
      this.video.removeAttribute("src");
      this.video.load();
    }
  }

  // cmcd returns this interval's values with CMCD key names and units:
  // bl (buffer ahead, ms), mtp (measured throughput, kbps), br (encoded
  // bitrate of the playing rendition, kbps), pb (top bitrate, kbps), ltc
  // (live latency, ms). Rebuffer counts and durations come from the video
  // element's own waiting/playing events (Telemetry).
  cmcd() {
    const out = {};
    const v = this.video;
    for (let i = 0; i < v.buffered.length; i++) {
      if (v.buffered.start(i) <= v.currentTime + 0.1 && v.currentTime <= v.buffered.end(i)) {
        out.bl = Math.max(0, Math.round((v.buffered.end(i) - v.currentTime) * 1000));
      }
    }
    const now = performance.now();
    const secs = (now - this.lastReport) / 1000;
    const h = this.hls;
    if (h) {
      if (h.bandwidthEstimate > 0) out.mtp = Math.round(h.bandwidthEstimate / 1000);
      const levels = h.levels || [];
      const cur = levels[h.currentLevel];
      if (cur && cur.bitrate) out.br = Math.round(cur.bitrate / 1000);
      const top = Math.max(0, ...levels.map((l) => l.bitrate || 0));
      if (top) out.pb = Math.round(top / 1000);
      if (Number.isFinite(h.latency) && h.latency > 0) out.ltc = Math.round(h.latency * 1000);
    }
    if (out.mtp === undefined && secs > 0 && this.bytes > 0) {
      out.mtp = Math.round((this.bytes * 8) / 1000 / secs);
    }
    this.bytes = 0;
    this.lastReport = now;
    return out;
  }
}

// HLSFallback is the one object watch.js talks to: it decides when to
// leave WebRTC and runs the HLS player after that.
export class HLSFallback {
  constructor({ video, telemetry, onChange = () => {} }) {
    this.telemetry = telemetry;
    this.onChange = onChange;
    this.reason = ""; // why the page is on HLS; "" while on WebRTC
    this.engine = "";
    this.player = new HLSPlayer(video, {
      onState: (engine, message) => {
        this.engine = engine;
        if (message) this.message = message;
        this.onChange();
      },
      onError: (code) => telemetry.error(code),
    });
  }

  get active() {
    return this.reason !== "";
  }

  // start switches to HLS for the given reason (kept for telemetry and
  // debugging) and plays url.
  start(reason, url) {
    if (!this.reason) {
      this.reason = reason;
      this.switchedAt = Math.round(performance.now()); // ms since navigation
      this.telemetry.error(`fallback:${reason}`);
      console.info("playing LL-HLS:", reason);
    }
    if (this.player.url === url) return;
    this.telemetry.detach();
    this.telemetry.attach(null); // startup delay counts from here
    this.player.start(url);
  }

  stop() {
    this.player.stop();
  }

  // addTelemetry merges the HLS player's CMCD values into a report.
  addTelemetry(msg) {
    if (this.active) Object.assign(msg, this.player.cmcd());
    return msg;
  }
}
