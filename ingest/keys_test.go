package ingest_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/backchannel/backchannel/ingest"
	"github.com/backchannel/backchannel/internal/keys"
	"github.com/backchannel/backchannel/internal/media"
	"github.com/backchannel/backchannel/internal/rtc"
	"github.com/backchannel/backchannel/internal/whipclient"
	"github.com/backchannel/backchannel/internal/whipclient/whiptest"
)

// TestWHIPStreamKeysAndRevocation: a per-stream key from internal/keys
// publishes to its stream only, the registry names the key, and revoking
// it ends the live session.
func TestWHIPStreamKeysAndRevocation(t *testing.T) {
	store, err := keys.OpenFile(filepath.Join(t.TempDir(), keys.FileName))
	if err != nil {
		t.Fatal(err)
	}
	k := keys.New(store, "", nil)
	tr, err := rtc.Listen(rtc.Config{ICEAddr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	reg := media.NewRegistry("n")
	srv, err := ingest.New(ingest.Config{Node: "n", Registry: reg, RTC: tr, Keys: k})
	if err != nil {
		t.Fatal(err)
	}
	k.OnRevoke(func(stream, id string) { ingest.EndRevoked(reg, stream, id) })
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { hs.Close(); _ = srv.Close(); reg.Close(); _ = tr.Close() })

	created, err := k.Create(context.Background(), "cup")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Another stream's key, or none of ours, is refused.
	_, err = whipclient.Publish(ctx, hs.URL+"/whip/other", created.Secret, whipclient.WithoutVideo())
	var he *whipclient.HTTPError
	if !errors.As(err, &he) || he.StatusCode != http.StatusUnauthorized {
		t.Fatalf("publishing to another stream: %v", err)
	}

	pub, err := whipclient.Publish(ctx, hs.URL+"/whip/cup", created.Secret, whipclient.WithoutVideo())
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	waitLive(t, reg, "cup")
	if info := reg.List()[0]; info.KeyID != created.ID || info.Protocol != media.ProtocolWHIP {
		t.Fatalf("stream info %+v, want key %s over whip", info, created.ID)
	}

	if err := k.Revoke(context.Background(), "cup", created.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case <-pub.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("revoking the key did not end the publisher's session")
	}
	if st, ok := reg.Lookup("cup"); ok && st.Live() {
		t.Fatal("stream still live after its key was revoked")
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.Sessions() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if srv.Sessions() != 0 {
		t.Fatal("session left after revocation")
	}
	_, err = whipclient.Publish(ctx, hs.URL+"/whip/cup", created.Secret, whipclient.WithoutVideo())
	if !errors.As(err, &he) || he.StatusCode != http.StatusUnauthorized {
		t.Fatalf("publishing with a revoked key: %v", err)
	}
}

func TestMasterKeyIdentifies(t *testing.T) {
	id, ok := ingest.IdentifyKey(ingest.MasterKey(whiptest.Key), "s", whiptest.Key)
	if !ok || id != ingest.MasterKeyID {
		t.Fatalf("IdentifyKey(master) = %q %v", id, ok)
	}
	if _, ok := ingest.IdentifyKey(ingest.MasterKey(whiptest.Key), "s", "x"); ok {
		t.Fatal("wrong key identified")
	}
	if ingest.EndRevoked(media.NewRegistry("n"), "s", "") != 0 {
		t.Fatal("EndRevoked with no id ended something")
	}
}

func waitLive(t *testing.T, reg *media.Registry, stream string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if st, ok := reg.Lookup(stream); ok && st.Live() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("stream %s never went live", stream)
}
