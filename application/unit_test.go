package application

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/backchannel/backchannel/groups"
	"github.com/backchannel/backchannel/internal/bus"
	"github.com/backchannel/backchannel/internal/control"
	"github.com/backchannel/backchannel/internal/polls"
)

func TestStaticEdge(t *testing.T) {
	ep, err := StaticEdge{ID: "e1"}.Pick(context.Background(), Viewer{}, "demo")
	if err != nil || ep != (Endpoint{Edge: "e1", WHEP: "/whep/demo", HLS: "/hls/demo/index.m3u8"}) {
		t.Fatalf("%+v %v", ep, err)
	}
	ep, _ = StaticEdge{ID: "e2", BaseURL: "https://edge.example.com/"}.Pick(context.Background(), Viewer{}, "cup")
	if ep.WHEP != "https://edge.example.com/whep/cup" || ep.HLS != "https://edge.example.com/hls/cup/index.m3u8" {
		t.Fatalf("%+v", ep)
	}
}

func TestDeriveAttrs(t *testing.T) {
	cases := []struct {
		ua, platform, mobile, lang, accept string
		device, os, browser, wantLang      string
	}{
		{"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36 Edg/120.0", "", "", "", "en-US,en;q=0.9", "desktop", "windows", "edge", "en"},
		{"Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36", `"Android"`, "?1", "es-AR", "", "mobile", "android", "chrome", "es"},
		{"Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Safari/604.1", "", "", "", "fr", "tablet", "ios", "safari", "fr"},
		{"Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0", "", "", "", "", "desktop", "linux", "firefox", "unknown"},
		{"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0 Safari/537.36", `"Linux"`, "?0", "en", "", "desktop", "linux", "chrome", "en"},
		{"Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/4.0 TV Safari/537.36", "", "", "", "", "tv", "tizen", "samsung", "unknown"},
		{"Googlebot/2.1 (+http://www.google.com/bot.html)", "", "", "", "", "bot", "other", "googlebot", "unknown"},
		{"", "", "", "", "", "unknown", "unknown", "unknown", "unknown"},
	}
	for _, c := range cases {
		f := &groups.Facts{UserAgent: c.ua, AcceptLanguage: c.accept, ClientHints: map[string]string{}}
		if c.platform != "" {
			f.ClientHints["sec-ch-ua-platform"] = c.platform
		}
		if c.mobile != "" {
			f.ClientHints["sec-ch-ua-mobile"] = c.mobile
		}
		if c.lang != "" {
			f.Hello = []byte(`{"t":"hello","lang":"` + c.lang + `"}`)
		}
		a := deriveAttrs(nil, f)
		if a["device"] != c.device || a["os"] != c.os || a["browser"] != c.browser || a["lang"] != c.wantLang {
			t.Errorf("%.50s: got %s/%s/%s/%s, want %s/%s/%s/%s", c.ua, a["device"], a["os"], a["browser"], a["lang"], c.device, c.os, c.browser, c.wantLang)
		}
		if err := groups.CheckAttrs(a); err != nil {
			t.Error(err)
		}
	}
}

func TestQoEWindows(t *testing.T) {
	var s qoeSeries
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	f := func(v float64) *float64 { return &v }
	rep := func(play, rb float64) *control.Telemetry {
		return &control.Telemetry{IV: 5000, PlayMS: play, RbMS: rb, MSD: f(play)}
	}
	s.add(t0.Add(1*time.Second), 10*time.Second, 3, rep(4000, 1000), 0)
	s.add(t0.Add(9*time.Second), 10*time.Second, 3, rep(5000, 0), 1)
	s.add(t0.Add(12*time.Second), 10*time.Second, 3, rep(3000, 2000), 0)
	for i := 0; i < 5; i++ {
		s.add(t0.Add(time.Duration(20+10*i)*time.Second), 10*time.Second, 3, rep(5000, 0), 0)
	}
	if len(s.windows) != 3 {
		t.Fatalf("%d windows kept, want 3", len(s.windows))
	}
	v := s.view(t0.Add(65*time.Second), 10*time.Second)
	if v.Total.Reports != 8 || v.Total.LostReports != 1 || v.Current == nil || v.Previous == nil || len(v.Windows) != 3 {
		t.Fatalf("view %+v", v)
	}
	if !v.Current.Start.Equal(t0.Add(60*time.Second)) || !v.Previous.Start.Equal(t0.Add(50*time.Second)) {
		t.Fatalf("current %v previous %v", v.Current.Start, v.Previous.Start)
	}
	if r := *v.Total.RebufferRatio; r != 3000.0/(37000+3000) {
		t.Fatalf("rebuffer ratio %v", r)
	}
	if *v.Total.StartupMS.P50 != 5000 || *v.Total.StartupMS.P95 != 5000 || v.Total.StartupMS.N != 8 {
		t.Fatalf("startup %+v", v.Total.StartupMS)
	}
	empty := (*qoeSeries)(nil).view(t0, time.Second)
	if empty.Total.Reports != 0 || empty.Current != nil || empty.Total.RebufferRatio != nil {
		t.Fatalf("empty view %+v", empty)
	}
}

func TestNewChecksConfig(t *testing.T) {
	b := bus.NewMemory()
	defer b.Close()
	for _, cfg := range []Config{
		{Edges: StaticEdge{}, OperatorKey: "k"},
		{Bus: b, OperatorKey: "k"},
		{Bus: b, Edges: StaticEdge{}},
		{Bus: b, Edges: StaticEdge{}, OperatorKey: "k", AudienceInterval: 200 * time.Millisecond},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("accepted %+v", cfg)
		}
	}
	s, err := New(Config{Bus: b, Edges: StaticEdge{}, OperatorKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if s.cfg.AudienceInterval != DefaultAudienceInterval {
		t.Fatalf("audience interval %v by default, want %v", s.cfg.AudienceInterval, DefaultAudienceInterval)
	}
	if _, err := New(Config{Bus: b, Edges: StaticEdge{}, OperatorKey: "k", AudienceInterval: MinAudienceInterval}); err != nil {
		t.Fatalf("the shortest audience interval refused: %v", err)
	}
}

// The audience check is cached per poll group on the profile: a change of
// the link's attributes (watching another stream, a new country) must not
// let an earlier answer stand.
func TestAudienceMatchFollowsAttributeChanges(t *testing.T) {
	newPoll := func(id, stream, where string) *pollState {
		p := polls.Poll{ID: id, Stream: stream, Choices: []string{"a", "b"}, Group: groups.AutoID(groups.AttrStream, stream)}
		if where != "" {
			pred, err := groups.ParsePredicate(where)
			if err != nil {
				t.Fatal(err)
			}
			p.Where, p.Group = pred, polls.GroupIDPrefix+id
		}
		return &pollState{poll: p, audience: p.Audience()}
	}
	cup, cup2, other, brOnly := newPoll("p1", "cup", ""), newPoll("p2", "cup", ""), newPoll("p3", "other", ""), newPoll("p4", "cup", "country=BR")
	var p profile
	p.setAttrs(groups.Attrs{groups.AttrStream: "cup", groups.AttrCountry: "DE"})
	for _, c := range []struct {
		ps   *pollState
		want bool
	}{{cup, true}, {cup2, true}, {other, false}, {brOnly, false}, {cup, true}} {
		if got := p.inAudience(c.ps); got != c.want {
			t.Fatalf("watching cup from DE: in audience of %s = %v", c.ps.poll.ID, got)
		}
	}
	p.setAttrs(groups.Attrs{groups.AttrStream: "other", groups.AttrCountry: "BR"})
	if p.inAudience(cup) || p.inAudience(cup2) || !p.inAudience(other) || p.inAudience(brOnly) {
		t.Fatal("after switching to other: the cup answers stood")
	}
	p.setAttrs(groups.Attrs{groups.AttrStream: "cup", groups.AttrCountry: "BR"})
	if !p.inAudience(brOnly) || !p.inAudience(cup) {
		t.Fatal("back on cup from BR: not in the audience")
	}
}

// serverWithPoll returns an application server on an in-memory bus with
// one open poll on stream "cup"; the operator key is "op".
func serverWithPoll(t *testing.T) (*Server, polls.Poll) {
	t.Helper()
	s, err := New(Config{Bus: bus.NewMemory(), Edges: StaticEdge{ID: "e1"}, OperatorKey: "op"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.CreatePoll(context.Background(), polls.Spec{Stream: "cup", Question: "?", Choices: []string{"a", "b"}})
	if err != nil {
		t.Fatal(err)
	}
	return s, p
}

// TestLiveResultsDoNotWaitForTheServerLock: counting votes holds Server.mu,
// so a live-results stream that needed it would lag the votes by as long.
// A change made while the lock is held reaches the stream before it is
// released, and so does a close.
func TestLiveResultsDoNotWaitForTheServerLock(t *testing.T) {
	s, p := serverWithPoll(t)
	mux := http.NewServeMux()
	s.Routes(mux)
	api := httptest.NewServer(mux)
	defer api.Close()
	req, _ := http.NewRequest("GET", api.URL+"/api/v1/polls/"+p.ID+"/live", nil)
	req.Header.Set("Authorization", "Bearer op")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := make(chan LiveEvent, 10)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var e LiveEvent
				_ = json.Unmarshal([]byte(data), &e)
				events <- e
			}
		}
	}()
	next := func() LiveEvent {
		t.Helper()
		select {
		case e := <-events:
			return e
		case <-time.After(5 * time.Second):
			t.Fatal("no live event while Server.mu is held")
			return LiveEvent{}
		}
	}
	if e := next(); e.Total != 0 || e.Final {
		t.Fatalf("first event %+v", e)
	}
	s.mu.Lock()
	locked := true
	defer func() {
		if locked {
			s.mu.Unlock() // before the server waits for the stream's handler
		}
	}()
	ps := s.polls[p.ID]
	ps.tally.Apply("u1", 1, nil)
	ps.notify()
	if e := next(); e.Total != 1 || e.Counts[1] != 1 || e.Final {
		t.Fatalf("after a vote %+v", e)
	}
	locked = false
	s.mu.Unlock()
	if _, err := s.ClosePoll(context.Background(), p.ID); err != nil {
		t.Fatal(err)
	}
	if e := next(); !e.Final || e.Total != 1 {
		t.Fatalf("after the close %+v", e)
	}
}

// TestVoteBatchLetsOthersTakeTheLock: a large upward batch is counted in
// slices, so that another user of Server.mu gets it before the batch is
// done rather than after all of it.
func TestVoteBatchLetsOthersTakeTheLock(t *testing.T) {
	s, p := serverWithPoll(t)
	const voters, repeats = 2000, 100
	s.mu.Lock()
	for i := range voters {
		pr := &profile{sid: fmt.Sprintf("l%d", i), conn: "c1", voter: polls.VoterOf(fmt.Sprintf("u%d", i))}
		pr.setAttrs(groups.Attrs{groups.AttrStream: "cup"})
		s.profiles[pr.sid] = pr
	}
	s.mu.Unlock()
	refs := make([]groups.VoteRef, 0, voters*repeats)
	for r := range repeats {
		for i := range voters {
			refs = append(refs, groups.VoteRef{Link: []byte(fmt.Sprintf("l%d", i)), Poll: []byte(p.ID), ID: []byte(fmt.Sprintf("v%d", r)), Choice: i % 2})
		}
	}
	var out outbox
	c := &commit{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.votes("c1", 0, refs, &out, c)
	}()
	for s.polls[p.ID].tally.Voters() == 0 {
		time.Sleep(50 * time.Microsecond)
	}
	s.mu.Lock()
	counted := len(c.votes)
	s.mu.Unlock()
	<-done
	if counted >= len(refs) {
		t.Fatalf("the lock was free only after all %d votes", len(refs))
	}
	if len(c.votes) != len(refs) || s.polls[p.ID].tally.Voters() != voters {
		t.Fatalf("%d votes recorded, %d voters counted", len(c.votes), s.polls[p.ID].tally.Voters())
	}
	t.Logf("another caller took the lock after %d of %d votes", counted, len(refs))
}
