// Studio: go live from the browser's camera over WHIP.
import { publishWHIP } from "./webrtc.js";

const form = document.getElementById("golive");
const streamInput = document.getElementById("stream");
const keyInput = document.getElementById("key");
const startBtn = document.getElementById("start");
const stopBtn = document.getElementById("stop");
const preview = document.getElementById("preview");
const status = document.getElementById("status");
const watchLink = document.getElementById("watch-link");

const KEY_STORE = "backchannel.publishKey";
const params = new URLSearchParams(location.search);
if (params.get("stream")) streamInput.value = params.get("stream");
keyInput.value = params.get("key") || localStorage.getItem(KEY_STORE) || "";

const state = { session: null, media: null, status: "off air", codec: null };
window.backchannel = { state };

function setStatus(text) {
  state.status = text;
  status.textContent = text;
}

function updateWatchLink() {
  const path = `/watch/${encodeURIComponent(streamInput.value)}`;
  watchLink.href = path;
  watchLink.textContent = path;
}
streamInput.addEventListener("input", updateWatchLink);
updateWatchLink();

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  startBtn.disabled = true;
  setStatus("Starting camera…");
  try {
    state.media = await navigator.mediaDevices.getUserMedia({
      video: { width: 1280, height: 720, frameRate: 30 },
      audio: true,
    });
    preview.srcObject = state.media;
    setStatus("Connecting…");
    const url = `/whip/${encodeURIComponent(streamInput.value)}`;
    state.session = await publishWHIP(url, keyInput.value, state.media);
    localStorage.setItem(KEY_STORE, keyInput.value);
    state.session.pc.addEventListener("connectionstatechange", () => {
      const s = state.session && state.session.pc.connectionState;
      if (s === "connected") {
        setStatus("Live");
        reportCodec();
      } else if (s === "failed" || s === "disconnected") setStatus(`Connection ${s}`);
    });
    stopBtn.disabled = false;
    setStatus("Negotiated, waiting for media to flow…");
  } catch (err) {
    const why = err.status === 401 ? "stream key not accepted" : err.message;
    setStatus(`Could not go live: ${why}`);
    stopMedia();
    startBtn.disabled = false;
  }
});

async function reportCodec() {
  const stats = await state.session.pc.getStats();
  stats.forEach((r) => {
    if (r.type === "outbound-rtp" && r.kind === "video" && r.codecId) {
      const c = stats.get(r.codecId);
      if (c) state.codec = c.mimeType;
    }
  });
}

function stopMedia() {
  if (state.media) state.media.getTracks().forEach((t) => t.stop());
  state.media = null;
  preview.srcObject = null;
}

stopBtn.addEventListener("click", async () => {
  stopBtn.disabled = true;
  if (state.session) await state.session.stop();
  state.session = null;
  stopMedia();
  setStatus("Off air");
  startBtn.disabled = false;
});
