package groups

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func TestBatchRoundTrip(t *testing.T) {
	// A numbered batch does not carry the users: the application knows
	// them from the links' opens.
	votes := Votes("c1", 0x1234_5678_9abc, []ClientVote{
		{Link: "L1", Poll: "pabc", Choice: 2, ID: "v-1"},
		{Link: "L2", Poll: "pabc", Choice: 0, ID: `id with "quotes" and é`},
	})
	sends := Sends([]LinkSend{
		{Link: "L1", Payload: []byte(`{"t":"ack","id":"v-1"}`), Critical: true, Wait: true},
		{Link: "L2", Payload: []byte(`{"t":"error","code":"unknown_poll","message":"no such poll","id":"x"}`)},
	})
	unnumbered := Votes("c2", 0, []ClientVote{{Link: "L3", UID: "u", Poll: "p", Choice: 1, ID: "i"}})
	committed := CommittedBatches([]CommittedBatch{{Batch: 7}, {Batch: 1 << 40, Refused: []int{0, 5, 6, 300}}})
	for _, m := range []Mirror{votes, unnumbered, committed, sends} {
		b := m.Encode()
		if !IsBatch(b) {
			t.Fatalf("%s: not a binary batch: %q", m.Op, b)
		}
		got, err := DecodeMirror(b)
		if err != nil {
			t.Fatalf("%s: %v", m.Op, err)
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("round trip changed\n%+v\n%+v", m, got)
		}
	}
	// In place: the refs point into the message.
	b := votes.Encode()
	conn, batch, refs, err := DecodeVotes(b, nil)
	if err != nil || string(conn) != "c1" || batch != 0x1234_5678_9abc || len(refs) != 2 || string(refs[1].ID) != `id with "quotes" and é` || refs[0].Choice != 2 {
		t.Fatalf("DecodeVotes: %q %d %+v %v", conn, batch, refs, err)
	}
	nb := NewVoteBatch("c1", 5, 0)
	nb.Add("L1", "anon-not-relayed", []byte("p"), 1, []byte("i"))
	if _, _, refs, err := DecodeVotes(nb.Bytes(), nil); err != nil || len(refs) != 1 || refs[0].UID != nil || bytes.Contains(nb.Bytes(), []byte("anon")) {
		t.Fatalf("a numbered batch carried its user: %q %+v %v", nb.Bytes(), refs, err)
	}
	if b := unnumbered.Encode(); b[2] != batchVersion {
		t.Fatalf("a batch without a number is version %d, want %d (what older application servers read)", b[2], batchVersion)
	}
	cb, err := DecodeCommitted(committed.Encode(), nil)
	if err != nil || !reflect.DeepEqual(cb, committed.Committed) {
		t.Fatalf("DecodeCommitted: %+v %v", cb, err)
	}
	srefs, err := DecodeSends(sends.Encode(), nil)
	if err != nil || len(srefs) != 2 || !srefs[0].Critical || !srefs[0].Wait || srefs[1].Critical || srefs[1].Wait || !bytes.Equal(srefs[1].Payload, sends.Sends[1].Payload) {
		t.Fatalf("DecodeSends: %+v %v", srefs, err)
	}
	// A builder and Encode agree.
	vb := NewVoteBatch("c1", 0x1234_5678_9abc, 0)
	for _, v := range votes.Votes {
		vb.Add(v.Link, v.UID, []byte(v.Poll), v.Choice, []byte(v.ID))
	}
	if vb.Len() != 2 || !bytes.Equal(vb.Bytes(), b) {
		t.Fatalf("builder: %d votes, %q", vb.Len(), vb.Bytes())
	}
}

func TestBatchRejects(t *testing.T) {
	good := Votes("c1", 0, []ClientVote{{Link: "L1", UID: "u", Poll: "p", Choice: 1, ID: "i"}}).Encode()
	cases := map[string][]byte{
		"truncated":          good[:len(good)-1],
		"not a binary batch": {0x00},
		"version":            {0x00, 'V', 9, 1, 'c'},
		"unknown kind":       {0x00, 'Z', 1},
		"without conn":       {0x00, 'V', 1, 0},
		"without link":       append([]byte{0x00, 'V', 1, 1, 'c'}, 0, 1, 'u', 1, 'p', 0, 1, 'i'),
		"choice out of":      append([]byte{0x00, 'V', 1, 1, 'c'}, 1, 'l', 1, 'u', 1, 'p', 0x80, 0x80, 0x04, 1, 'i'),
		"field of":           {0x00, 'S', 1, 0xff, 0xff, 0xff, 0xff, 0x0f, 'L'},
		"send flags":         {0x00, 'S', 1, 1, 'L', 4, 1, 'x'},
		"send flags ":        {0x00, 'S', 1, 1, 'L', 2, 1, 'x'}, // wait without critical
		"without link or":    {0x00, 'S', 1, 1, 'L', 1, 0},
		"without a number":   {0x00, 'V', 2, 1, 'c', 0},
		"batch number 0":     {0x00, 'C', 1, 0, 0},
		"refused votes":      {0x00, 'C', 1, 1, 3, 0},
		"index out of range": {0x00, 'C', 1, 1, 2, 0x80, 0x80, 0x3f, 0x80, 0x80, 0x3f},
		"batch: truncated":   {0x00, 'C', 1, 1},
	}
	for want, in := range cases {
		_, err := DecodeMirror(in)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", in, err, want)
		}
	}
	if _, err := DecodeMirror([]byte(`{"op":"votes","conn":"c1"}`)); err == nil {
		t.Error("a JSON votes message was accepted")
	}
	// A malformed batch yields no records at all.
	dst := []VoteRef{{Link: []byte("keep")}}
	bad := append(append([]byte(nil), good...), 1, 'L')
	if _, _, out, err := DecodeVotes(bad, dst); err == nil || len(out) != 1 {
		t.Fatalf("partial batch: %d refs, err %v", len(out), err)
	}
}

// FuzzDecodeBatch: a batch decoder never panics, and what it accepts
// encodes back to the same bytes.
func FuzzDecodeBatch(f *testing.F) {
	f.Add(Votes("c1", 0, []ClientVote{{Link: "L1", UID: "u", Poll: "p", Choice: 3, ID: "v"}}).Encode())
	f.Add(Votes("c1", 99, []ClientVote{{Link: "L1", UID: "u", Poll: "p", Choice: 3, ID: "v"}}).Encode())
	f.Add(CommittedBatches([]CommittedBatch{{Batch: 3, Refused: []int{1, 4}}, {Batch: 9}}).Encode())
	f.Add(Sends([]LinkSend{{Link: "L1", Payload: []byte(`{"t":"ack","id":"v"}`), Critical: true}}).Encode())
	f.Add([]byte{0x00, 'S', 1})
	f.Add([]byte{0x00, 'V', 1, 2, 'c', '1', 1, 'L', 0, 1, 'p', 0x81, 0x01, 1, 'i'})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeMirror(data)
		if err != nil || !IsBatch(data) {
			return
		}
		if got := m.Encode(); !bytes.Equal(got, data) {
			// Uvarints have one canonical form each; anything accepted
			// that re-encodes differently used a padded one.
			m2, err := DecodeMirror(got)
			if err != nil || !reflect.DeepEqual(m, m2) {
				t.Fatalf("%q decoded to %+v, which encodes to %q", data, m, got)
			}
		}
	})
}
