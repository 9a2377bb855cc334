package rtsp_test

import (
	"context"
	"encoding/base64"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/backchannel/backchannel/ingest"
	"github.com/backchannel/backchannel/internal/keys"
)

func keyNode(t *testing.T, master string) (*node, *keys.Keys) {
	t.Helper()
	store, err := keys.OpenFile(filepath.Join(t.TempDir(), keys.FileName))
	if err != nil {
		t.Fatal(err)
	}
	k := keys.New(store, master, nil)
	n := startNode(t, nodeOptions{keys: k})
	k.OnRevoke(func(stream, id string) { ingest.EndRevoked(n.Registry, stream, id) })
	return n, k
}

// TestFFmpegWrongKeyPublishesNothing: a wrong key gets 401 and nothing
// goes on air.
func TestFFmpegWrongKeyPublishesNothing(t *testing.T) {
	t.Parallel()
	n, k := keyNode(t, "")
	other, err := k.Create(context.Background(), "other")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"wrong", other.Secret} {
		pub := startFFmpeg(t, publishArgs(2, "tcp", n.rtspURL("x", "key="+url.QueryEscape(key)))...)
		err := pub.wait(t, 15*time.Second)
		if err == nil {
			t.Fatalf("ffmpeg published with key %q", key)
		}
		if !strings.Contains(pub.stderr.String(), "401") {
			t.Fatalf("ffmpeg's error does not say 401:\n%s", pub.stderr.String())
		}
	}
	if len(n.Registry.List()) != 0 || n.RTSP.Sessions() != 0 {
		t.Fatalf("something was published: %+v", n.Registry.List())
	}
	if got := counterValue(t, n.RTSPMetrics, "backchannel_rtsp_rejections_total", "auth"); got < 2 {
		t.Fatalf("auth rejections %v", got)
	}
}

// TestFFmpegDigestCredentials: the key as the password of RTSP
// credentials: ffmpeg answers the Digest challenge with the key id as user
// name; any user name works with the master key; a stored key under
// another user name does not.
func TestFFmpegDigestCredentials(t *testing.T) {
	t.Parallel()
	n, k := keyNode(t, "master-key")
	c, err := k.Create(context.Background(), "cup")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		user, pass string
		ok         bool
		keyID      string
	}{
		{c.ID, c.Secret, true, c.ID},
		{"studio", "master-key", true, keys.MasterID},
		{"studio", c.Secret, false, ""},
	}
	for _, tc := range cases {
		u := "rtsp://" + url.UserPassword(tc.user, tc.pass).String() + "@" + n.RTSP.Addr().String() + "/cup"
		pub := startFFmpeg(t, publishArgs(1.5, "tcp", u)...)
		if !tc.ok {
			if err := pub.wait(t, 15*time.Second); err == nil || !strings.Contains(pub.stderr.String(), "401") {
				t.Fatalf("%s: published (err %v):\n%s", tc.user, err, pub.stderr.String())
			}
			continue
		}
		info := n.waitLive(t, "cup", 10*time.Second)
		if info.KeyID != tc.keyID {
			t.Fatalf("%s: published with key %q, want %q", tc.user, info.KeyID, tc.keyID)
		}
		if err := pub.wait(t, 15*time.Second); err != nil {
			t.Fatalf("%s: %v\n%s", tc.user, err, pub.stderr.String())
		}
		deadline := time.Now().Add(3 * time.Second)
		for len(n.Registry.List()) > 0 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}

	// Basic credentials: any user name, the key as password.
	rc := dialRaw(t, n)
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("anyone:"+c.Secret))
	sdp := strings.ReplaceAll(ffmpegSDPForTests, "\n", "\r\n")
	wantStatus(t, "ANNOUNCE with Basic", rc.do("ANNOUNCE", n.rtspURL("cup", ""), map[string]string{"Content-Type": "application/sdp", "Authorization": auth}, sdp), 200)
	bad := "Basic " + base64.StdEncoding.EncodeToString([]byte("anyone:nope"))
	wantStatus(t, "ANNOUNCE with a bad Basic", dialRaw(t, n).do("ANNOUNCE", n.rtspURL("cup", ""), map[string]string{"Content-Type": "application/sdp", "Authorization": bad}, sdp), 401)
	stale := `Digest username="x", realm="backchannel", nonce="0011", uri="rtsp://h/cup", response="00"`
	wantStatus(t, "ANNOUNCE with a forged nonce", dialRaw(t, n).do("ANNOUNCE", n.rtspURL("cup", ""), map[string]string{"Content-Type": "application/sdp", "Authorization": stale}, sdp), 401)
}

// TestRevokingKeyEndsRTSPSession: revoking the key an RTSP publisher used
// ends its session and takes the stream off air.
func TestRevokingKeyEndsRTSPSession(t *testing.T) {
	t.Parallel()
	n, k := keyNode(t, "")
	c, err := k.Create(context.Background(), "cup")
	if err != nil {
		t.Fatal(err)
	}
	pub := startFFmpeg(t, publishArgs(20, "tcp", n.rtspURL("cup", "key="+c.Secret))...)
	info := n.waitLive(t, "cup", 10*time.Second)
	if info.KeyID != c.ID {
		t.Fatalf("key id %q, want %q", info.KeyID, c.ID)
	}
	time.Sleep(500 * time.Millisecond)
	revoked := time.Now()
	if err := k.Revoke(context.Background(), "cup", c.ID); err != nil {
		t.Fatal(err)
	}
	if err := pub.wait(t, 10*time.Second); err == nil {
		t.Fatal("ffmpeg went on publishing after its key was revoked")
	}
	t.Logf("publisher cut %v after the revocation", time.Since(revoked).Round(time.Millisecond))
	if st, ok := n.Registry.Lookup("cup"); ok && st.Live() {
		t.Fatal("stream live after its key was revoked")
	}
	deadline := time.Now().Add(3 * time.Second)
	for n.RTSP.Sessions() != 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n.RTSP.Sessions() != 0 {
		t.Fatal("session left after revocation")
	}
	// The revoked key publishes no more.
	again := startFFmpeg(t, publishArgs(1, "tcp", n.rtspURL("cup", "key="+c.Secret))...)
	if err := again.wait(t, 15*time.Second); err == nil {
		t.Fatal("a revoked key published")
	}
}
