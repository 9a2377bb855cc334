package cluster

import (
	"runtime"
	"sync"
	"syscall"
	"time"
)

// CPUMeter measures the share of the machine's CPUs this process used
// between two samples, for Load.CPU.
type CPUMeter struct {
	mu   sync.Mutex
	last time.Time
	used time.Duration
}

// NewCPUMeter starts measuring now.
func NewCPUMeter() *CPUMeter {
	return &CPUMeter{last: time.Now(), used: processCPU()}
}

// Sample returns the busy fraction (0..1) since the previous sample.
func (m *CPUMeter) Sample() float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	now, used := time.Now(), processCPU()
	wall := now.Sub(m.last)
	busy := used - m.used
	m.last, m.used = now, used
	if wall <= 0 {
		return 0
	}
	f := float64(busy) / float64(wall) / float64(runtime.NumCPU())
	return min(max(f, 0), 1)
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
