package main

import (
	"flag"
	"testing"
)

func TestParseICEServers(t *testing.T) {
	got, err := parseICEServers("stun:stun.example.com:3478, turn:al%40ice:s3cr:et@turn.example.com:3478?transport=udp")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].URLs[0] != "stun:stun.example.com:3478" || got[0].Username != "" {
		t.Fatalf("stun: %+v", got)
	}
	if got[1].URLs[0] != "turn:turn.example.com:3478?transport=udp" || got[1].Username != "al@ice" || got[1].Credential != "s3cr:et" {
		t.Fatalf("turn: %+v", got[1])
	}
	for _, bad := range []string{"http://x", "turn:host:3478", "stun:"} {
		if _, err := parseICEServers(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestEnvironmentSetsUnsetFlags(t *testing.T) {
	t.Setenv("BACKCHANNEL_PUBLIC_URL", "https://env.example")
	t.Setenv("BACKCHANNEL_HTTP", ":9999")
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	pub := fs.String("public-url", "", "")
	httpAddr := fs.String("http", ":8080", "")
	if err := parseWithEnv(fs, []string{"--http", ":7000"}); err != nil {
		t.Fatal(err)
	}
	if *pub != "https://env.example" || *httpAddr != ":7000" {
		t.Fatalf("public-url %q http %q", *pub, *httpAddr)
	}
	t.Setenv("BACKCHANNEL_DEMO", "maybe")
	fs = flag.NewFlagSet("x", flag.ContinueOnError)
	fs.Bool("demo", false, "")
	if err := parseWithEnv(fs, nil); err == nil {
		t.Fatal("bad boolean in environment accepted")
	}
}
