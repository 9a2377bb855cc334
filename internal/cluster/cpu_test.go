package cluster_test

import (
	"testing"
	"time"

	"github.com/backchannel/backchannel/internal/cluster"
)

func TestCPUMeterSeesWork(t *testing.T) {
	m := cluster.NewCPUMeter()
	time.Sleep(50 * time.Millisecond)
	idle := m.Sample()
	deadline := time.Now().Add(200 * time.Millisecond)
	x := 0
	for time.Now().Before(deadline) {
		x++
	}
	busy := m.Sample()
	if busy <= idle || busy <= 0.1 || busy > 1 {
		t.Fatalf("idle %.3f, busy %.3f (spun %d times)", idle, busy, x)
	}
}
