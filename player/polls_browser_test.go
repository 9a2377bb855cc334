package player_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/backchannel/backchannel/internal/browsertest"
	"github.com/backchannel/backchannel/internal/node"
)

// TestPollInChromium: two viewers in separate browser contexts (two users)
// see a poll the studio page sends, vote with one tap, the studio's bars
// show the totals live, and after the studio closes the poll both viewers
// see the final results.
func TestPollInChromium(t *testing.T) {
	n, err := node.Start(context.Background(), node.Config{
		HTTPAddr: "127.0.0.1:0", ICEAddr: "127.0.0.1:0", DataDir: t.TempDir(), NodeID: "browser",
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		n.Shutdown(ctx)
	})
	b := browsertest.Launch(t)
	viewers := []*browsertest.Page{b.NewUser(t), b.NewUser(t)}
	for _, v := range viewers {
		v.Navigate(n.URL() + "/watch/cup")
	}
	for _, v := range viewers {
		if err := v.WaitFor(15*time.Second, `window.backchannel && window.backchannel.link.sid`); err != nil {
			t.Fatal(err)
		}
	}
	uids := [2]string{}
	for i, v := range viewers {
		uids[i] = browsertest.MustEval[string](v, `window.backchannel.link.uid`)
	}
	if uids[0] == uids[1] {
		t.Fatal("the two browser contexts are the same user")
	}

	studio := b.NewUser(t)
	studio.Navigate(n.URL() + "/studio?stream=cup&apikey=" + n.OperatorKey())
	if err := studio.WaitFor(15*time.Second, `document.getElementById("audience-count").textContent === "2"`); err != nil {
		t.Fatal(err)
	}
	browsertest.MustEval[bool](studio, `(() => {
		document.getElementById("poll-question").value = "Who wins the cup?";
		document.getElementById("poll-choices").value = "Brazil\nGermany\nDraw";
		document.getElementById("poll-create").click();
		return true;
	})()`)
	if err := studio.WaitFor(10*time.Second, `!document.getElementById("results-panel").hidden && document.querySelectorAll("#results-bars .choice").length === 3`); err != nil {
		t.Fatal(err)
	}

	// One tap each: viewer 0 votes Brazil, viewer 1 votes Draw, then changes
	// to Brazil too.
	tap := func(p *browsertest.Page, choice int) {
		t.Helper()
		sel := `#polls .choice[data-choice="` + string(rune('0'+choice)) + `"]`
		if err := p.WaitFor(10*time.Second, `document.querySelector('`+sel+`')`); err != nil {
			t.Fatal(err)
		}
		browsertest.MustEval[bool](p, `(document.querySelector('`+sel+`').click(), true)`)
		if err := p.WaitFor(10*time.Second, `document.querySelector("#polls .meta").textContent.includes("your vote is counted")`); err != nil {
			t.Fatal(err)
		}
	}
	tap(viewers[0], 0)
	tap(viewers[1], 2)
	if err := studio.WaitFor(10*time.Second, `document.getElementById("results-total").textContent === "2"`); err != nil {
		t.Fatal(err)
	}
	tap(viewers[1], 0)
	bars := `[...document.querySelectorAll("#results-bars .count")].map(e => e.textContent).join("|")`
	if err := studio.WaitFor(10*time.Second, bars+` === "2 · 100%|0 · 0%|0 · 0%"`); err != nil {
		got, _ := browsertest.Eval[string](studio, bars)
		t.Fatalf("%v; studio bars %q", err, got)
	}
	// The viewers' own bars move too (latest state, ≤ 2 updates/s).
	for _, v := range viewers {
		if err := v.WaitFor(10*time.Second, `document.querySelector('#polls .choice[data-choice="0"] .count').textContent === "2 · 100%"`); err != nil {
			t.Fatal(err)
		}
	}

	browsertest.MustEval[bool](studio, `(document.getElementById("poll-close").click(), true)`)
	if err := studio.WaitFor(10*time.Second, `document.getElementById("results-state").textContent === "final results"`); err != nil {
		t.Fatal(err)
	}
	for _, v := range viewers {
		if err := v.WaitFor(10*time.Second, `document.querySelector("#polls .meta").textContent.startsWith("Final results · 2 votes") && document.querySelector("#polls .choice").disabled`); err != nil {
			got, _ := browsertest.Eval[string](v, `document.getElementById("polls").innerText`)
			t.Fatalf("%v; viewer shows %q", err, got)
		}
	}

	// The API agrees with what the pages show.
	req, _ := http.NewRequest("GET", n.URL()+"/api/v1/polls?stream=cup", nil)
	req.Header.Set("Authorization", "Bearer "+n.OperatorKey())
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	var list struct {
		Polls []struct {
			State   string `json:"state"`
			Results struct {
				Counts []int `json:"counts"`
				Final  bool  `json:"final"`
			} `json:"results"`
		} `json:"polls"`
	}
	if err := json.Unmarshal(body, &list); err != nil || len(list.Polls) != 1 {
		t.Fatalf("%s %v", body, err)
	}
	if p := list.Polls[0]; p.State != "closed" || !p.Results.Final || p.Results.Counts[0] != 2 || p.Results.Counts[2] != 0 {
		t.Fatalf("%s", body)
	}
}
