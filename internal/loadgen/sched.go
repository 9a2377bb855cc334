package loadgen

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// YieldToServer puts every thread of this process in the SCHED_BATCH
// policy; the processes it starts afterwards inherit it, and so do threads
// it creates. A load generator on the machine of the server it measures
// stands for clients on other machines: its CPU is shared fairly (the
// weight is unchanged), but its wake-ups no longer preempt the server's
// threads. Without it, a worker waking to send its due votes preempted
// the server mid-batch: the live-results p99 measured 1.6× longer (median
// of 7 interleaved pairs, BENCHMARKS.md, "The load generator yields").
func YieldToServer() error {
	// Threads can start while the list is read; a second pass catches
	// those started from a thread that had not been switched yet.
	for range 2 {
		tids, err := threads("self")
		if err != nil {
			return err
		}
		for _, tid := range tids {
			attr := unix.SchedAttr{Size: unix.SizeofSchedAttr, Policy: unix.SCHED_BATCH}
			if err := unix.SchedSetAttr(tid, &attr, 0); err != nil && err != unix.ESRCH {
				return fmt.Errorf("loadgen: thread %d to SCHED_BATCH: %w", tid, err)
			}
		}
	}
	return nil
}

// YieldToServerAt yields (YieldToServer) unless compete is set or the
// server under test, process serverPID, is unknown (0) or this process,
// whose CPU could not be told from the generator's anyway. It reports
// whether it yielded.
func YieldToServerAt(serverPID int, compete bool) (bool, error) {
	if compete || serverPID == 0 || serverPID == os.Getpid() {
		return false, nil
	}
	return true, YieldToServer()
}

// threadPolicies counts process pid's threads by scheduling policy
// (unix.SCHED_*).
func threadPolicies(pid int) (map[uint32]int, error) {
	tids, err := threads(strconv.Itoa(pid))
	if err != nil {
		return nil, err
	}
	n := map[uint32]int{}
	for _, tid := range tids {
		attr, err := unix.SchedGetAttr(tid, 0)
		if err != nil {
			continue // exited
		}
		n[attr.Policy]++
	}
	return n, nil
}

// threads lists the thread ids of process pid ("self" for this one).
func threads(pid string) ([]int, error) {
	tasks, err := os.ReadDir("/proc/" + pid + "/task")
	if err != nil {
		return nil, err
	}
	tids := make([]int, 0, len(tasks))
	for _, t := range tasks {
		if tid, err := strconv.Atoi(t.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}
