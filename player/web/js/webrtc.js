// WHIP and WHEP clients (RFC 9725, draft-ietf-wish-whep): one POST of a
// complete offer, the answer in the 201 body, DELETE on the Location to end.

export class HTTPError extends Error {
  constructor(status, detail, retryAfter) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

function waitForIceGathering(pc, timeoutMs = 2000) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      pc.removeEventListener("icegatheringstatechange", check);
      clearTimeout(timer);
      resolve();
    };
    const check = () => pc.iceGatheringState === "complete" && done();
    pc.addEventListener("icegatheringstatechange", check);
    // Host candidates are enough for the server's ICE-lite style answer; do not
    // hold the offer for slow STUN/TURN gathering.
    const timer = setTimeout(done, timeoutMs);
  });
}

function parseLinkIceServers(header) {
  const servers = [];
  if (!header) return servers;
  for (const part of header.split(/,(?=\s*<)/)) {
    const m = part.match(/<([^>]+)>(.*)/);
    if (!m || !/rel="?ice-server"?/.test(m[2])) continue;
    const server = { urls: m[1] };
    const user = m[2].match(/username="([^"]*)"/);
    const cred = m[2].match(/credential="([^"]*)"/);
    if (user) server.username = user[1];
    if (cred) server.credential = cred[1];
    servers.push(server);
  }
  return servers;
}

async function exchange(pc, url, headers) {
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  await waitForIceGathering(pc);
  const res = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/sdp", ...headers },
    body: pc.localDescription.sdp,
  });
  if (res.status !== 201) {
    let detail = "";
    try {
      const body = await res.json();
      detail = body.detail || body.title;
    } catch {}
    throw new HTTPError(res.status, detail, Number(res.headers.get("Retry-After")) || 0);
  }
  const answer = await res.text();
  await pc.setRemoteDescription({ type: "answer", sdp: answer });
  const location = new URL(res.headers.get("Location"), new URL(url, location_base())).toString();
  return { location, iceServers: parseLinkIceServers(res.headers.get("Link")) };
}

function location_base() {
  return window.location.href;
}

// playWHEP opens a receive-only session and resolves with {pc, stream, stop}.
export async function playWHEP(url, { onTrack } = {}) {
  const pc = new RTCPeerConnection();
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const stream = new MediaStream();
  pc.ontrack = (ev) => {
    stream.addTrack(ev.track);
    if (onTrack) onTrack(ev, stream);
  };
  let session;
  try {
    session = await exchange(pc, url, {});
  } catch (err) {
    pc.close();
    throw err;
  }
  const stop = () => {
    pc.close();
    fetch(session.location, { method: "DELETE", keepalive: true }).catch(() => {});
  };
  return { pc, stream, stop, location: session.location };
}

// publishWHIP sends the given media stream; video prefers H.264 so the
// broadcast can also be packaged as HLS.
export async function publishWHIP(url, key, media) {
  const pc = new RTCPeerConnection();
  for (const track of media.getTracks()) {
    const tr = pc.addTransceiver(track, { direction: "sendonly", streams: [media] });
    if (track.kind === "video") preferCodec(tr, "video/H264");
  }
  let session;
  try {
    session = await exchange(pc, url, { Authorization: `Bearer ${key}` });
  } catch (err) {
    pc.close();
    throw err;
  }
  const stop = () => {
    pc.close();
    return fetch(session.location, {
      method: "DELETE",
      headers: { Authorization: `Bearer ${key}` },
      keepalive: true,
    }).catch(() => {});
  };
  return { pc, stop, location: session.location };
}

function preferCodec(transceiver, mimeType) {
  if (!transceiver.setCodecPreferences || !RTCRtpSender.getCapabilities) return;
  const codecs = RTCRtpSender.getCapabilities("video").codecs;
  const wanted = codecs.filter((c) => c.mimeType.toLowerCase() === mimeType.toLowerCase());
  if (!wanted.length) return;
  // Constrained baseline with packetization-mode=1 first: every decoder plays it.
  wanted.sort((a, b) => score(b) - score(a));
  const rest = codecs.filter((c) => !wanted.includes(c));
  transceiver.setCodecPreferences([...wanted, ...rest]);
}

function score(c) {
  const f = c.sdpFmtpLine || "";
  return (f.includes("packetization-mode=1") ? 2 : 0) + (f.includes("profile-level-id=42e0") ? 1 : 0);
}
