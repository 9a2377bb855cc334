package application_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/backchannel/backchannel/internal/bus"
)

func (c *cluster) postNotice(body, key string) (int, map[string]any) {
	c.t.Helper()
	req, _ := http.NewRequest("POST", c.api.URL+"/api/v1/notices", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode >= 400 && resp.Header.Get("Content-Type") != "application/problem+json" {
		c.t.Fatalf("error %d without problem details", resp.StatusCode)
	}
	return resp.StatusCode, out
}

// TestNoticeReachesEveryMemberAndNoOneElse: one POST, one publish per
// connection server, identical bytes to every member of the group on both
// servers, nothing to the others.
func TestNoticeReachesEveryMemberAndNoOneElse(t *testing.T) {
	c := newCluster(t)
	a1, a2 := c.viewer("c1", nil), c.viewer("c2", nil)
	other := c.viewer("c1", nil)
	a1.watch("cup")
	a1.next() // stream-status
	a2.watch("cup")
	a2.next()
	other.watch("news")
	other.next()
	before1, before2 := c.bus.count(bus.Downward("c1")), c.bus.count(bus.Downward("c2"))
	start := time.Now()
	code, acc := c.postNotice(`{"group":"stream:cup","message":"Kick-off in 5 minutes","level":"warning"}`, operatorKey)
	if code != http.StatusAccepted || acc["off"] != float64(1) || acc["connection_servers"] != float64(2) {
		t.Fatalf("POST: %d %v", code, acc)
	}
	b1, b2 := a1.nextRaw(), a2.nextRaw()
	if !bytes.Equal(b1, b2) {
		t.Fatalf("members got different bytes:\n%s\n%s", b1, b2)
	}
	var n map[string]any
	if err := json.Unmarshal(b1, &n); err != nil {
		t.Fatal(err)
	}
	ts := n["ts"].(float64)
	if n["t"] != "notice" || n["g"] != "stream:cup" || n["off"] != float64(1) || n["ep"] != acc["ep"] ||
		n["text"] != "Kick-off in 5 minutes" || n["level"] != "warning" || ts != acc["ts"] ||
		ts < float64(start.UnixMicro())/1000-1 || ts > float64(time.Now().UnixMicro())/1000+1 {
		t.Fatalf("notice %v (accepted %v)", n, acc)
	}
	other.quiet(200 * time.Millisecond)
	if d1, d2 := c.bus.count(bus.Downward("c1"))-before1, c.bus.count(bus.Downward("c2"))-before2; d1 != 1 || d2 != 1 {
		t.Fatalf("publishes per connection server %d, %d; want 1 each", d1, d2)
	}
	// The next notice to the group has the next offset.
	if _, acc := c.postNotice(`{"group":"stream:cup","message":"again"}`, operatorKey); acc["off"] != float64(2) {
		t.Fatalf("second notice %v", acc)
	}
	if m := a2.next(); m["off"] != float64(2) || m["level"] != "info" {
		t.Fatalf("second notice %v", m)
	}
}

func TestNoticeRejectsBadInput(t *testing.T) {
	c := newCluster(t)
	for _, tc := range []struct {
		body, key string
		code      int
	}{
		{`{"group":"global","message":"x"}`, "wrong", 401},
		{`{"group":"global","message":`, operatorKey, 400},
		{`[1,2]`, operatorKey, 400},
		{`{"message":"x"}`, operatorKey, 422},
		{`{"group":"global"}`, operatorKey, 422},
		{`{"group":"global","message":"` + strings.Repeat("x", 2001) + `"}`, operatorKey, 422},
		{`{"group":"global","message":"x","level":"panic"}`, operatorKey, 422},
		{`{"group":"nosuchattr:x","message":"x"}`, operatorKey, 404},
		{`{"group":"no-such-custom-group","message":"x"}`, operatorKey, 404},
	} {
		if code, body := c.postNotice(tc.body, tc.key); code != tc.code {
			t.Errorf("%s: %d %v, want %d", tc.body, code, body, tc.code)
		}
	}
	req, _ := http.NewRequest("GET", c.api.URL+"/api/v1/notices", nil)
	req.Header.Set("Authorization", "Bearer "+operatorKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 || resp.Header.Get("Allow") != "POST" {
		t.Fatalf("GET: %d", resp.StatusCode)
	}
	// Still serving after all that.
	if code, _ := c.postNotice(`{"group":"global","message":"ok"}`, operatorKey); code != 202 {
		t.Fatalf("good notice after bad ones: %d", code)
	}
}
