package dtsqueue

import (
	"errors"
	"math/rand/v2"
	"testing"
)

// TestQueueProperties checks, for random reorderings bounded by N, that the
// DTS increase strictly, never exceed the PTS, and lag the PTS order by
// exactly N frames once the window has filled.
func TestQueueProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 9))
	for n := 0; n <= 4; n++ {
		// Output order 0..k-1; decode order moves frames earlier by at
		// most n positions, which bounds reordering by n. Frame 0 stays
		// first, as a stream starts at a keyframe.
		const k = 400
		order := make([]int, k)
		for i := range order {
			order[i] = i
		}
		for i := k - 1; i > 0; i-- {
			j := max(1, i-rng.IntN(n+1))
			order[i], order[j] = order[j], order[i]
		}
		if !boundedBy(order, n) {
			continue
		}
		var q Queue
		q.SetReorder(n)
		q.SetFrameDuration(3000)
		prev := int64(-1 << 62)
		for i, o := range order {
			pts := int64(o)*3000 + 1000000
			dts, err := q.Next(pts)
			if err != nil {
				t.Fatalf("N=%d frame %d: %v", n, i, err)
			}
			if dts <= prev || dts > pts {
				t.Fatalf("N=%d frame %d: dts %d prev %d pts %d", n, i, dts, prev, pts)
			}
			if want := int64(i-n)*3000 + 1000000; dts != want {
				t.Fatalf("N=%d frame %d: dts %d, want %d", n, i, dts, want)
			}
			prev = dts
		}
	}
}

// boundedBy reports whether no frame has more than n frames before it in
// decode order that follow it in output order.
func boundedBy(order []int, n int) bool {
	for i, o := range order {
		c := 0
		for _, p := range order[:i] {
			if p > o {
				c++
			}
		}
		if c > n {
			return false
		}
	}
	return true
}

func TestQueueRejectsOverReorder(t *testing.T) {
	var q Queue
	q.SetReorder(1)
	for _, pts := range []int64{0, 6000} {
		if _, err := q.Next(pts); err != nil {
			t.Fatal(err)
		}
	}
	// 3000 then 1500: the second exceeds a window of 1.
	if dts, err := q.Next(3000); err != nil || dts != 3000 {
		t.Fatalf("dts %d %v", dts, err)
	}
	if _, err := q.Next(1500); !errors.Is(err, ErrPTSBeforeDTS) {
		t.Fatalf("err %v", err)
	}
	// The refused frame left no trace.
	if dts, err := q.Next(9000); err != nil || dts != 6000 {
		t.Fatalf("after refusal: dts %d %v", dts, err)
	}
	q.SetReorder(0) // windows never shrink
	if q.Reorder() != 1 {
		t.Fatal("window shrank")
	}
	q.Reset()
	if dts, _ := q.Next(50000); dts != 50000-3000 {
		t.Fatalf("after reset: %d", dts)
	}
}
