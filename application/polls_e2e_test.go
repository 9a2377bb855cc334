package application_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/backchannel/backchannel/application"
	"github.com/backchannel/backchannel/internal/geo"
	"github.com/backchannel/backchannel/internal/geo/geotest"
	"github.com/backchannel/backchannel/internal/store"
)

// api sends a request with a JSON body and decodes the JSON answer.
func (c *cluster) call(method, path, key string, body any) (int, map[string]any) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, c.api.URL+path, rd)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			c.t.Fatalf("%s %s: %s: %v", method, path, raw, err)
		}
	}
	if resp.StatusCode >= 400 && resp.Header.Get("Content-Type") != "application/problem+json" {
		c.t.Fatalf("%s %s: error %d is not problem+json", method, path, resp.StatusCode)
	}
	return resp.StatusCode, out
}

// nextOf returns the next frame of type typ, skipping others.
func (v *viewer) nextOf(typ string) map[string]any {
	v.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		m := v.next()
		if m["t"] == typ {
			return m
		}
	}
	v.t.Fatalf("no %s frame", typ)
	return nil
}

func nums(v any) []int64 {
	var out []int64
	for _, x := range v.([]any) {
		out = append(out, int64(x.(float64)))
	}
	return out
}

func watchLive(c *cluster, v *viewer, stream string) {
	v.t.Helper()
	v.watch(stream)
	if st := v.next(); st["t"] != "stream-status" {
		v.t.Fatalf("status %v", st)
	}
}

func TestPollValidationErrorsNameTheField(t *testing.T) {
	c := newCluster(t)
	cases := []struct {
		body   any
		status int
		fields []string
	}{
		{map[string]any{"stream": "cup", "question": strings.Repeat("x", 281), "choices": []string{"a"}}, 422, []string{"question", "choices"}},
		{map[string]any{"stream": "bad name!", "question": "q", "choices": []string{"a", "a"}}, 422, []string{"stream", "choices[1]"}},
		{map[string]any{"stream": "cup", "question": "q", "choices": []string{"a", "b"}, "duration_ms": 5}, 422, []string{"duration_ms"}},
		{map[string]any{"stream": "cup", "question": "q", "choices": []string{"a", "b"}, "where": "country=="}, 422, []string{"where"}},
		{map[string]any{"stream": "cup", "question": "q", "choices": "a,b"}, 422, []string{"choices"}},
		{map[string]any{"stream": "cup", "question": "q", "choices": []string{"a", "b"}, "where": map[string]any{"eq": []string{"planet", "mars"}}}, 422, []string{"where"}},
	}
	for i, tc := range cases {
		code, body := c.call("POST", "/api/v1/polls", operatorKey, tc.body)
		if code != tc.status {
			t.Errorf("%d: status %d %v", i, code, body)
			continue
		}
		var got []string
		for _, f := range body["invalid-params"].([]any) {
			got = append(got, f.(map[string]any)["name"].(string))
		}
		if !slices.Equal(got, tc.fields) {
			t.Errorf("%d: fields %v, want %v (%v)", i, got, tc.fields, body["detail"])
		}
	}
	req, _ := http.NewRequest("POST", c.api.URL+"/api/v1/polls", strings.NewReader("{not json"))
	req.Header.Set("Authorization", "Bearer "+operatorKey)
	resp, _ := http.DefaultClient.Do(req)
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("malformed body: %d", resp.StatusCode)
	}
}

// TestPollOneVotePerUser: a poll reaches exactly its stream's audience as
// one message per connection server with identical bytes; each user has one
// vote, changed votes move, resends are acked without counting twice, and
// a user on two links is still one vote.
func TestPollOneVotePerUser(t *testing.T) {
	c := newCluster(t)
	a := c.viewer("c1", nil)
	watchLive(c, a, "cup")
	b := c.viewer("c2", nil)
	watchLive(c, b, "cup")
	a2 := c.viewer("c2", nil, a.token) // a's user on a second link
	watchLive(c, a2, "cup")
	other := c.viewer("c1", nil)
	watchLive(c, other, "tennis")
	if a2.uid != a.uid {
		t.Fatal("same token, different user")
	}

	before1, before2 := c.bus.count("bc:down:c1"), c.bus.count("bc:down:c2")
	code, poll := c.call("POST", "/api/v1/polls", operatorKey, map[string]any{"stream": "cup", "question": "Who scores first?", "choices": []string{"Brazil", "Germany", "Nobody"}})
	if code != 201 {
		t.Fatalf("create: %d %v", code, poll)
	}
	id := poll["id"].(string)
	pa, pb := a.nextRaw(), b.nextRaw()
	if !bytes.Equal(pa, pb) || !bytes.Contains(pa, []byte(`"t":"poll"`)) || !bytes.Contains(pa, []byte(`"g":"stream:cup"`)) {
		t.Fatalf("poll frames differ or wrong:\n%s\n%s", pa, pb)
	}
	a2.nextOf("poll")
	if d1, d2 := c.bus.count("bc:down:c1")-before1, c.bus.count("bc:down:c2")-before2; d1 != 1 || d2 != 1 {
		t.Fatalf("publishes per connection server: %d, %d", d1, d2)
	}
	other.quiet(100 * time.Millisecond)

	vote := func(v *viewer, choice int, vid string) map[string]any {
		v.t.Helper()
		v.send(fmt.Sprintf(`{"t":"vote","poll":%q,"choice":%d,"id":%q}`, id, choice, vid))
		for {
			m := v.next()
			if m["t"] == "ack" || m["t"] == "error" {
				return m
			}
		}
	}
	if m := vote(a, 0, "a1"); m["t"] != "ack" || m["id"] != "a1" {
		t.Fatalf("vote: %v", m)
	}
	if m := vote(b, 1, "b1"); m["t"] != "ack" {
		t.Fatalf("vote: %v", m)
	}
	if m := vote(a, 0, "a1"); m["t"] != "ack" { // resend after a lost ack
		t.Fatalf("resend: %v", m)
	}
	if m := vote(a2, 2, "a2"); m["t"] != "ack" { // same user, other link: a change
		t.Fatalf("second link: %v", m)
	}
	if m := vote(b, 7, "b2"); m["code"] != "bad_choice" || m["id"] != "b2" {
		t.Fatalf("bad choice: %v", m)
	}
	if m := vote(other, 0, "o1"); m["code"] != "not_in_audience" {
		t.Fatalf("other stream's viewer: %v", m)
	}
	other.send(`{"t":"vote","poll":"nope","choice":0,"id":"x"}`)
	if m := other.nextOf("error"); m["code"] != "unknown_poll" || m["id"] != "x" {
		t.Fatalf("unknown poll: %v", m)
	}

	_, res := c.call("GET", "/api/v1/polls/"+id+"/results", operatorKey, nil)
	if got := nums(res["counts"]); !slices.Equal(got, []int64{0, 1, 1}) || res["total"] != float64(2) || res["final"] != false {
		t.Fatalf("results %v", res)
	}
	_, bd := c.call("GET", "/api/v1/polls/"+id+"/results/conn", operatorKey, nil)
	// a's vote moved to the second link, on c2: c1 has no votes left.
	vals := bd["values"].(map[string]any)
	if len(vals) != 1 || !slices.Equal(nums(vals["c2"].(map[string]any)["counts"]), []int64{0, 1, 1}) {
		t.Fatalf("by conn %v", bd)
	}
	if code, _ := c.call("GET", "/api/v1/polls/"+id+"/results/planet", operatorKey, nil); code != 404 {
		t.Fatalf("unknown dimension: %d", code)
	}

	// The audience gets the final results at close.
	code, closed := c.call("POST", "/api/v1/polls/"+id+"/close", operatorKey, nil)
	if code != 200 || closed["state"] != "closed" || closed["closed_at"] == nil {
		t.Fatalf("close: %d %v", code, closed)
	}
	for _, v := range []*viewer{a, b, a2} {
		for {
			m := v.nextOf("results")
			if m["final"] == true {
				if !slices.Equal(nums(m["counts"]), []int64{0, 1, 1}) {
					t.Fatalf("final %v", m)
				}
				break
			}
		}
	}
	if m := vote(b, 0, "late"); m["code"] != "poll_closed" {
		t.Fatalf("vote after close: %v", m)
	}
	if m := vote(b, 1, "b1"); m["t"] != "ack" {
		t.Fatalf("resend of a counted vote after close: %v", m)
	}
	_, res = c.call("GET", "/api/v1/polls/"+id, operatorKey, nil)
	if r := res["results"].(map[string]any); r["final"] != true || r["total"] != float64(2) {
		t.Fatalf("after close %v", res)
	}
}

// TestTimedPollAndLateJoiner: a poll with a duration closes by itself; a
// viewer who starts watching while it is open gets it with its own vote.
func TestTimedPollAndLateJoiner(t *testing.T) {
	c := newCluster(t)
	a := c.viewer("c1", nil)
	watchLive(c, a, "cup")
	_, poll := c.call("POST", "/api/v1/polls", operatorKey, map[string]any{"stream": "cup", "question": "Quick?", "choices": []string{"yes", "no"}, "duration_ms": 1500})
	id := poll["id"].(string)
	if p := a.nextOf("poll"); p["closes_at"] == nil {
		t.Fatalf("poll %v", p)
	}
	a.send(`{"t":"vote","poll":"` + id + `","choice":1,"id":"v"}`)
	a.nextOf("ack")
	again := c.viewer("c2", nil, a.token)
	again.watch("cup")
	p := again.nextOf("poll")
	if p["id"] != id || p["choice"] != float64(1) || p["seq"] == nil {
		t.Fatalf("late joiner's poll %v", p)
	}
	start := time.Now()
	for {
		m := a.nextOf("results")
		if m["final"] == true {
			break
		}
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("closed after %v", el)
	}
	_, got := c.call("GET", "/api/v1/polls/"+id, operatorKey, nil)
	if got["state"] != "closed" || got["closed_at"] != got["closes_at"] {
		t.Fatalf("timed close %v", got)
	}
}

// TestAudienceUpdatesThrottled: votes arriving continuously reach the
// audience as at most 2 results messages per second, the last one
// carrying the latest counts.
func TestAudienceUpdatesThrottled(t *testing.T) {
	c := newCluster(t)
	watcher := c.viewer("c1", nil)
	watchLive(c, watcher, "cup")
	var voters []*viewer
	for i := range 30 {
		v := c.viewer([]string{"c1", "c2"}[i%2], nil)
		watchLive(c, v, "cup")
		voters = append(voters, v)
	}
	_, poll := c.call("POST", "/api/v1/polls", operatorKey, map[string]any{"stream": "cup", "question": "?", "choices": []string{"a", "b"}})
	id := poll["id"].(string)
	watcher.nextOf("poll")
	start := time.Now()
	go func() {
		for i, v := range voters {
			v.c.Write(context.Background(), websocket.MessageText, []byte(fmt.Sprintf(`{"t":"vote","poll":%q,"choice":%d,"id":"x"}`, id, i%2)))
			time.Sleep(50 * time.Millisecond) // 30 votes over 1.5 s
		}
	}()
	var updates []map[string]any
	deadline := time.After(2700 * time.Millisecond)
collect:
	for {
		select {
		case f := <-watcher.frames:
			var m map[string]any
			json.Unmarshal(f, &m)
			if m["t"] == "results" {
				m["at"] = time.Since(start).Seconds()
				updates = append(updates, m)
			}
		case <-deadline:
			break collect
		}
	}
	el := time.Since(start).Seconds()
	if len(updates) < 2 || float64(len(updates)) > el*2+1 {
		t.Fatalf("%d updates in %.1f s: %v", len(updates), el, updates)
	}
	for i := 1; i < len(updates); i++ {
		if gap := updates[i]["at"].(float64) - updates[i-1]["at"].(float64); gap < 0.45 {
			t.Fatalf("updates %.3f s apart", gap)
		}
	}
	if last := updates[len(updates)-1]; last["total"] != float64(30) {
		t.Fatalf("last update %v", last)
	}
}

// TestLiveResultsStream: the broadcaster's SSE stream sends every change,
// coalesced to at most 10 events per second, with a breakdown, and ends
// with the final results.
func TestLiveResultsStream(t *testing.T) {
	c := newCluster(t)
	var voters []*viewer
	for i := range 20 {
		v := c.viewer([]string{"c1", "c2"}[i%2], nil)
		watchLive(c, v, "cup")
		voters = append(voters, v)
	}
	_, poll := c.call("POST", "/api/v1/polls", operatorKey, map[string]any{"stream": "cup", "question": "?", "choices": []string{"a", "b", "c"}})
	id := poll["id"].(string)
	req, _ := http.NewRequest("GET", c.api.URL+"/api/v1/polls/"+id+"/live?by=conn", nil)
	req.Header.Set("Authorization", "Bearer "+operatorKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	type ev struct {
		application.LiveEvent
		got time.Time
	}
	events := make(chan ev, 100)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var e ev
				json.Unmarshal([]byte(data), &e.LiveEvent)
				e.got = time.Now()
				events <- e
			}
		}
		close(events)
	}()
	if e := <-events; e.Total != 0 || e.Breakdown == nil {
		t.Fatalf("first event %+v", e)
	}
	for i, v := range voters {
		v.send(fmt.Sprintf(`{"t":"vote","poll":%q,"choice":%d,"id":"x"}`, id, i%3))
		time.Sleep(10 * time.Millisecond)
	}
	var last ev
	var n int
	var prev time.Time
	for e := range events {
		n++
		if !prev.IsZero() && e.got.Sub(prev) < 80*time.Millisecond {
			t.Errorf("events %v apart", e.got.Sub(prev))
		}
		prev, last = e.got, e
		if e.Total == 20 && !e.Final {
			c.call("POST", "/api/v1/polls/"+id+"/close", operatorKey, nil)
		}
	}
	if !last.Final || last.Total != 20 || !slices.Equal(last.Counts, []int64{7, 7, 6}) || n < 2 || n > 8 {
		t.Fatalf("%d events, last %+v", n, last)
	}
	if bc := last.Breakdown.Values; bc["c1"].Total != 10 || bc["c2"].Total != 10 {
		t.Fatalf("breakdown %+v", last.Breakdown)
	}
}

// TestGeoGroupsAndTargetedPoll: GeoIP fixtures place viewers (by their
// loopback source address) in Brazil and Germany; automatic country groups
// form on both tiers; a poll aimed at "country=BR" reaches only Brazil, and
// results break down by country.
func TestGeoGroupsAndTargetedPoll(t *testing.T) {
	city, asn, err := geotest.WriteFixtures(t.TempDir(), []geotest.FixtureCity{
		{Network: "127.0.0.0/24", Country: "BR", Continent: "SA", Subdivision: "SP", City: "São Paulo"},
		{Network: "127.0.1.0/24", Country: "DE", Continent: "EU", Subdivision: "BE", City: "Berlin"},
	}, []geotest.FixtureASN{{Network: "127.0.0.0/24", ASN: 28573, Org: "Claro"}, {Network: "127.0.1.0/24", ASN: 3320, Org: "DTAG"}})
	if err != nil {
		t.Fatal(err)
	}
	loc, err := geo.Open(city, asn)
	if err != nil {
		t.Fatal(err)
	}
	defer loc.Close()
	c := newCluster(t, func(cfg *application.Config) { cfg.Geo = loc })
	mobile := http.Header{"User-Agent": {"Mozilla/5.0 (iPhone; CPU iPhone OS 17_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.2 Mobile/15E148 Safari/604.1"}}
	br1 := c.viewerFrom("c1", "127.0.0.11", mobile)
	br2 := c.viewerFrom("c2", "127.0.0.12", nil)
	de := c.viewerFrom("c2", "127.0.1.13", mobile)
	for _, v := range []*viewer{br1, br2, de} {
		watchLive(c, v, "cup")
	}
	p, _ := c.app.Profile(de.sid)
	if p.Attrs["country"] != "DE" || p.Attrs["city"] != "Berlin" || p.Attrs["asn"] != "AS3320" || p.Attrs["continent"] != "EU" || p.Attrs["device"] != "mobile" {
		t.Fatalf("attrs %v", p.Attrs)
	}
	waitFor(t, "country groups mirrored", func() bool {
		return slices.Contains(c.conn["c2"].LinkGroups(de.sid), "country:DE") && slices.Contains(c.conn["c1"].LinkGroups(br1.sid), "subdivision:SP")
	})
	if _, g := c.apiGet("/api/v1/groups/country:BR", operatorKey); g["members"] != float64(2) {
		t.Fatalf("country:BR %v", g)
	}
	_, g := c.apiGet("/api/v1/groups/stream:cup?breakdown=country,device", operatorKey)
	bd := g["breakdown"].(map[string]any)
	if bd["country"].(map[string]any)["BR"] != float64(2) || bd["device"].(map[string]any)["mobile"] != float64(2) {
		t.Fatalf("breakdown %v", bd)
	}

	code, poll := c.call("POST", "/api/v1/polls", operatorKey, map[string]any{"stream": "cup", "question": "Brazil only", "choices": []string{"x", "y"}, "where": "country=BR"})
	if code != 201 || poll["audience"] != float64(2) {
		t.Fatalf("targeted poll %d %v", code, poll)
	}
	id := poll["id"].(string)
	m1, m2 := br1.nextOf("poll"), br2.nextOf("poll")
	if m1["g"] != "poll-"+id || m2["g"] != m1["g"] {
		t.Fatalf("targeted poll frames %v %v", m1, m2)
	}
	de.quiet(150 * time.Millisecond)
	br1.send(`{"t":"vote","poll":"` + id + `","choice":0,"id":"1"}`)
	br2.send(`{"t":"vote","poll":"` + id + `","choice":1,"id":"2"}`)
	de.send(`{"t":"vote","poll":"` + id + `","choice":1,"id":"3"}`)
	br1.nextOf("ack")
	br2.nextOf("ack")
	if e := de.nextOf("error"); e["code"] != "not_in_audience" {
		t.Fatal(e)
	}
	_, bdc := c.call("GET", "/api/v1/polls/"+id+"/results/device", operatorKey, nil)
	vals := bdc["values"].(map[string]any)
	if !slices.Equal(nums(vals["mobile"].(map[string]any)["counts"]), []int64{1, 0}) || !slices.Equal(nums(vals["bot"].(map[string]any)["counts"]), []int64{0, 1}) {
		t.Fatalf("by device %v", bdc)
	}
	_, bcy := c.call("GET", "/api/v1/polls/"+id+"/results/country", operatorKey, nil)
	if v := bcy["values"].(map[string]any); len(v) != 1 || v["BR"].(map[string]any)["total"] != float64(2) {
		t.Fatalf("by country %v", bcy)
	}
	// Closing undefines the delivery group on both tiers.
	c.call("POST", "/api/v1/polls/"+id+"/close", operatorKey, nil)
	waitFor(t, "poll group undefined", func() bool { return !slices.Contains(c.conn["c1"].LinkGroups(br1.sid), "poll-"+id) })
}

func TestCustomGroups(t *testing.T) {
	c := newCluster(t)
	tv := c.viewer("c1", http.Header{"User-Agent": {"Mozilla/5.0 (SMART-TV; LINUX; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) 76.0.3809.146/6.0 TV Safari/537.36"}})
	ff := c.viewer("c2", http.Header{"User-Agent": {"Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"}})
	waitFor(t, "profiles", func() bool { _, a := c.app.Profile(tv.sid); _, b := c.app.Profile(ff.sid); return a && b })
	code, g := c.call("POST", "/api/v1/groups", operatorKey, map[string]any{"id": "big-screens", "text": "device=tv OR (os=linux AND NOT browser=chrome)"})
	if code != 201 || g["members"] != float64(2) {
		t.Fatalf("create %d %v", code, g)
	}
	code, g = c.call("POST", "/api/v1/groups", operatorKey, map[string]any{"id": "tvs", "definition": map[string]any{"eq": []string{"device", "tv"}}})
	if code != 201 || g["members"] != float64(1) || g["text"] != "device=tv" {
		t.Fatalf("create json %d %v", code, g)
	}
	waitFor(t, "definition on the connection servers", func() bool {
		return slices.Contains(c.conn["c1"].LinkGroups(tv.sid), "tvs") && slices.Contains(c.conn["c2"].LinkGroups(ff.sid), "big-screens")
	})
	for _, bad := range []map[string]any{
		{"id": "global", "text": "device=tv"},
		{"id": "country:BR", "text": "device=tv"},
		{"id": "ok", "text": "device=="},
		{"id": "ok"},
		{"id": "ok", "text": "a=b", "definition": map[string]any{"eq": []string{"device", "tv"}}},
	} {
		if code, body := c.call("POST", "/api/v1/groups", operatorKey, bad); code != 422 || body["invalid-params"] == nil {
			t.Errorf("%v: %d %v", bad, code, body)
		}
	}
	// A viewer who arrives later is placed by the connection server itself.
	tv2 := c.viewer("c2", http.Header{"User-Agent": {"Roku/DVP-9.10 (519.10E04111A)"}})
	waitFor(t, "late member", func() bool { return slices.Contains(c.conn["c2"].LinkGroups(tv2.sid), "tvs") })
	if code, _ := c.call("DELETE", "/api/v1/groups/tvs", operatorKey, nil); code != 204 {
		t.Fatal(code)
	}
	waitFor(t, "undefined", func() bool { return !slices.Contains(c.conn["c2"].LinkGroups(tv2.sid), "tvs") })
	if code, _ := c.call("DELETE", "/api/v1/groups/tvs", operatorKey, nil); code != 404 {
		t.Fatal(code)
	}
}

func TestBranding(t *testing.T) {
	c := newCluster(t)
	a := c.viewer("c1", nil)
	watchLive(c, a, "cup")
	body := map[string]any{"title": "Cup Final", "logo_url": "https://example.com/logo.png", "upcoming": []map[string]any{{"title": "Semi", "starts_at": 1893456000000}}}
	if code, b := c.call("PUT", "/api/v1/streams/cup/branding", operatorKey, body); code != 200 || b["title"] != "Cup Final" {
		t.Fatalf("%d %v", code, b)
	}
	if m := a.nextOf("branding"); m["g"] != "stream:cup" || m["logo_url"] != "https://example.com/logo.png" {
		t.Fatalf("pushed %v", m)
	}
	late := c.viewer("c2", nil)
	late.watch("cup")
	if m := late.nextOf("branding"); m["title"] != "Cup Final" || m["seq"] == nil {
		t.Fatalf("on join %v", m)
	}
	code, b := c.call("PUT", "/api/v1/streams/cup/branding", operatorKey, map[string]any{"logo_url": "javascript:alert(1)", "upcoming": []map[string]any{{"title": ""}}})
	if code != 422 || len(b["invalid-params"].([]any)) != 3 {
		t.Fatalf("%d %v", code, b)
	}
}

// TestKeysAndScopes: operators create keys; a broadcaster key reaches only
// its streams.
func TestKeysAndScopes(t *testing.T) {
	c := newCluster(t)
	code, k := c.call("POST", "/api/v1/keys", operatorKey, map[string]any{"name": "cup studio", "role": "broadcaster", "streams": []string{"cup"}})
	if code != 201 || !strings.HasPrefix(k["token"].(string), "bck_") || k["hash"] != nil {
		t.Fatalf("%d %v", code, k)
	}
	bk := k["token"].(string)
	if code, _ := c.call("POST", "/api/v1/keys", operatorKey, map[string]any{"role": "admin"}); code != 422 {
		t.Fatal(code)
	}
	if code, p := c.call("POST", "/api/v1/polls", bk, map[string]any{"stream": "cup", "question": "q", "choices": []string{"a", "b"}}); code != 201 {
		t.Fatalf("own stream: %d %v", code, p)
	}
	for _, tc := range []struct {
		method, path string
		body         any
		want         int
	}{
		{"POST", "/api/v1/polls", map[string]any{"stream": "other", "question": "q", "choices": []string{"a", "b"}}, 403},
		{"GET", "/api/v1/keys", nil, 403},
		{"POST", "/api/v1/groups", map[string]any{"id": "x", "text": "device=tv"}, 403},
		{"GET", "/api/v1/groups/global", nil, 403},
		{"GET", "/api/v1/groups/stream:cup", nil, 200},
		{"GET", "/api/v1/groups/stream:other", nil, 403},
		{"PUT", "/api/v1/streams/other/branding", map[string]any{"title": "x"}, 403},
		{"GET", "/api/v1/streams/cup", nil, 200},
	} {
		if code, body := c.call(tc.method, tc.path, bk, tc.body); code != tc.want {
			t.Errorf("%s %s: %d %v, want %d", tc.method, tc.path, code, body, tc.want)
		}
	}
	_, list := c.call("GET", "/api/v1/polls", bk, nil)
	if len(list["polls"].([]any)) != 1 {
		t.Fatal(list)
	}
	_, keys := c.call("GET", "/api/v1/keys", operatorKey, nil)
	id := keys["keys"].([]any)[0].(map[string]any)["id"].(string)
	if code, _ := c.call("DELETE", "/api/v1/keys/"+id, operatorKey, nil); code != 204 {
		t.Fatal(code)
	}
	if code, _ := c.call("GET", "/api/v1/polls", bk, nil); code != 401 {
		t.Fatal("revoked key still works")
	}
}

// TestStateSurvivesRestart: polls, votes (with their breakdowns), custom
// groups, branding and keys are in the data directory; a new application
// server over it has the same tallies, and a user's repeated vote is still
// not counted twice.
func TestStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	st, err := store.OpenFile(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, func(cfg *application.Config) { cfg.Store = st })
	a, b := c.viewer("c1", nil), c.viewer("c2", nil)
	watchLive(c, a, "cup")
	watchLive(c, b, "cup")
	_, poll := c.call("POST", "/api/v1/polls", operatorKey, map[string]any{"stream": "cup", "question": "q", "choices": []string{"a", "b"}})
	id := poll["id"].(string)
	_, k := c.call("POST", "/api/v1/keys", operatorKey, map[string]any{"role": "operator"})
	c.call("POST", "/api/v1/groups", operatorKey, map[string]any{"id": "mobiles", "text": "device=mobile"})
	c.call("PUT", "/api/v1/streams/cup/branding", operatorKey, map[string]any{"title": "T"})
	a.send(`{"t":"vote","poll":"` + id + `","choice":0,"id":"1"}`)
	b.send(`{"t":"vote","poll":"` + id + `","choice":1,"id":"2"}`)
	a.nextOf("ack")
	b.nextOf("ack")
	st.Close()

	st2, err := store.OpenFile(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.Close()
	c2 := newCluster(t, func(cfg *application.Config) { cfg.Store = st2 })
	_, res := c2.call("GET", "/api/v1/polls/"+id+"/results", k["token"].(string), nil)
	if !slices.Equal(nums(res["counts"]), []int64{1, 1}) {
		t.Fatalf("after restart %v", res)
	}
	_, bd := c2.call("GET", "/api/v1/polls/"+id+"/results/conn", operatorKey, nil)
	if v := bd["values"].(map[string]any); v["c1"].(map[string]any)["total"] != float64(1) {
		t.Fatalf("breakdown after restart %v", bd)
	}
	if code, g := c2.call("GET", "/api/v1/groups/mobiles", operatorKey, nil); code != 200 || g["kind"] != "custom" {
		t.Fatalf("group %d %v", code, g)
	}
	a2 := c2.viewer("c1", nil, a.token)
	a2.watch("cup")
	if m := a2.nextOf("branding"); m["title"] != "T" {
		t.Fatal(m)
	}
	if p := a2.nextOf("poll"); p["choice"] != float64(0) {
		t.Fatalf("poll after restart %v", p)
	}
	a2.send(`{"t":"vote","poll":"` + id + `","choice":0,"id":"1"}`)
	a2.nextOf("ack")
	_, res = c2.call("GET", "/api/v1/polls/"+id+"/results", operatorKey, nil)
	if res["total"] != float64(2) {
		t.Fatalf("resend after restart counted twice: %v", res)
	}
}
