package whiptest

import (
	"context"
	"testing"

	"github.com/backchannel/backchannel/internal/browsertest"
)

// Chrome starts a headless Chromium for the test, set up for WebRTC on
// loopback (see browsertest.Launch), and returns the context of its tab.
// A missing browser fails the test: interop is part of what must pass.
func Chrome(t testing.TB) context.Context {
	t.Helper()
	return browsertest.Launch(t).Context()
}

// PlayerPage is a minimal WHEP player and WHIP publisher in browser
// JavaScript, the way a web page would do it (no library).
const PlayerPage = `<!doctype html><html><body><script>
async function negotiate(pc, url, headers) {
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(r => {
    if (pc.iceGatheringState === 'complete') return r();
    pc.addEventListener('icegatheringstatechange', () => pc.iceGatheringState === 'complete' && r());
    setTimeout(r, 3000);
  });
  const res = await fetch(url, {method: 'POST', headers: Object.assign({'Content-Type': 'application/sdp'}, headers), body: pc.localDescription.sdp});
  const body = await res.text();
  if (res.status !== 201) throw new Error('POST ' + res.status + ': ' + body);
  window.resource = new URL(res.headers.get('Location'), url).href;
  await pc.setRemoteDescription({type: 'answer', sdp: body});
  await new Promise((resolve, reject) => {
    const check = () => {
      if (pc.connectionState === 'connected') resolve();
      if (pc.connectionState === 'failed') reject(new Error('connection failed'));
    };
    pc.addEventListener('connectionstatechange', check);
    check();
    setTimeout(() => reject(new Error('not connected: ' + pc.connectionState)), 10000);
  });
}
async function play(url) {
  const pc = new RTCPeerConnection();
  window.pc = pc;
  pc.addTransceiver('video', {direction: 'recvonly'});
  pc.addTransceiver('audio', {direction: 'recvonly'});
  const video = document.createElement('video');
  video.muted = true; video.autoplay = true; video.playsInline = true;
  document.body.appendChild(video);
  pc.ontrack = e => { video.srcObject = e.streams[0] || new MediaStream([e.track]); };
  await negotiate(pc, url, {});
  return 'playing';
}
async function publish(url, key) {
  const media = await navigator.mediaDevices.getUserMedia({video: {width: 640, height: 360, frameRate: 30}, audio: true});
  const pc = new RTCPeerConnection();
  window.pc = pc;
  for (const track of media.getTracks()) pc.addTransceiver(track, {direction: 'sendonly'});
  await negotiate(pc, url, {'Authorization': 'Bearer ' + key});
  return 'publishing';
}
async function inbound() {
  const out = {};
  for (const r of (await pc.getStats()).values()) {
    if (r.type === 'inbound-rtp') out[r.kind] = r;
    if (r.type === 'codec') out['codec:' + r.mimeType] = true;
  }
  return out;
}
async function outbound() {
  const out = {};
  for (const r of (await pc.getStats()).values()) {
    if (r.type === 'outbound-rtp') out[r.kind] = r;
  }
  return out;
}
</script></body></html>`
