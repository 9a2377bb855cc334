// The viewer player: control link first, media second. The control link
// tells us which edge to play from and whether the stream is live; the media
// connection (WHEP) is opened beside it and replaced when the server says so.
import { ControlLink } from "./control.js";
import { playWHEP } from "./webrtc.js";
import { Telemetry } from "./telemetry.js";
import { Interactions } from "./interact.js";
import { HLSFallback, forcedReason, whepFailureReason, watchICE } from "./hls-player.js";

const stream = decodeURIComponent(location.pathname.replace(/^\/watch\//, "").replace(/\/$/, ""));
const video = document.getElementById("video");
const overlay = document.getElementById("overlay");
const info = document.getElementById("info");
document.title = `${stream} · Backchannel`;
document.getElementById("stream-name").textContent = stream;

const state = {
  stream,
  endpoint: null, // latest endpoint message
  live: null, // true, false, or null while unknown
  session: null, // current WHEP session
  starting: false,
  retryTimer: null,
  linkState: "connecting",
  telemetrySent: 0,
};

function show(text) {
  overlay.textContent = text;
  overlay.hidden = !text;
}

function render() {
  info.textContent = [
    `control: ${state.linkState}`,
    state.endpoint ? `edge: ${state.endpoint.edge}` : "",
    state.live === null ? "" : state.live ? "live" : "offline",
  ]
    .filter(Boolean)
    .join(" · ");
  if (hls.player.error) show(`Cannot play: ${hls.player.error}`);
  else if ((state.session || hls.active) && !video.paused && video.readyState >= 2) show("");
  else if (state.live === false) show("Offline — the broadcast will start here");
  else if (state.linkState !== "open" && !state.session) show("Connecting…");
  else if (!state.session) show("Starting…");
}

const link = new ControlLink({
  onState: (s, reason) => {
    state.linkState = s;
    if (reason) console.debug("control link", s, reason);
    render();
  },
  onMessage: (msg) => handle(msg),
});

const telemetry = new Telemetry({
  video,
  send: (m) => {
    link.send(hls.addTelemetry(m));
    state.telemetrySent++;
  },
});

const interactions = new Interactions({ link, stream, root: document });
// LL-HLS takes over when WebRTC cannot work here (hls-player.js).
const hls = new HLSFallback({ video, telemetry, onChange: render });
const hlsURL = () => state.endpoint.hls || `/hls/${encodeURIComponent(stream)}/index.m3u8`;

function handle(msg) {
  if (interactions.handle(msg)) return;
  switch (msg.t) {
    case "endpoint":
    case "redirect": {
      if (msg.stream && msg.stream !== stream) return;
      const changed = !state.endpoint || state.endpoint.whep !== msg.whep;
      state.endpoint = msg;
      if (changed && state.session) stopMedia();
      startMedia();
      break;
    }
    case "stream-status":
      if (msg.stream !== stream) return;
      state.live = msg.state === "live";
      if (state.live) startMedia();
      else stopMedia();
      break;
    case "error":
      console.warn("server error", msg.code, msg.message);
      telemetry.error(msg.code);
      break;
  }
  render();
}

async function startMedia() {
  if (!state.endpoint || state.session || state.starting || state.live === false) return;
  const forced = forcedReason();
  if (hls.active || forced) return hls.start(hls.reason || forced, hlsURL());
  state.starting = true;
  clearTimeout(state.retryTimer);
  try {
    const session = await playWHEP(state.endpoint.whep, {
      onTrack: (_ev, ms) => {
        if (video.srcObject !== ms) video.srcObject = ms;
        video.play().catch(() => {});
      },
    });
    state.session = session;
    telemetry.attach(session.pc);
    watchICE(session.pc, () => state.session === session && (stopMedia(), hls.start("ice", hlsURL())));
    session.pc.addEventListener("connectionstatechange", () => {
      const s = session.pc.connectionState;
      if ((s === "failed" || s === "closed") && state.session === session) {
        telemetry.error(`webrtc:${s}`);
        stopMedia();
        retry(2000);
      }
    });
  } catch (err) {
    telemetry.error(err.status ? `whep:${err.status}` : "whep");
    if (whepFailureReason(err)) return hls.start(whepFailureReason(err), hlsURL());
    // 409: not live yet; the control link will say when it is, but retry too
    // in case that message is lost.
    retry(err.retryAfter ? err.retryAfter * 1000 : 3000);
  } finally {
    state.starting = false;
    render();
  }
}

function stopMedia() {
  hls.stop();
  if (!state.session) return;
  state.session.stop();
  state.session = null;
  telemetry.detach();
  video.srcObject = null;
  render();
}

function retry(ms) {
  clearTimeout(state.retryTimer);
  state.retryTimer = setTimeout(startMedia, ms + Math.random() * 500);
}

video.addEventListener("playing", render);
window.addEventListener("pagehide", () => {
  stopMedia();
  link.stop();
});

// Exposed for debugging and for the browser tests.
window.backchannel = { state, link, telemetry, video, interactions, hls };

link.sendOnEveryConnect({ t: "watch", stream });
link.start();
telemetry.start();
render();
