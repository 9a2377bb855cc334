package loadgen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat;
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// ProcSample is what /proc says about a process at one moment.
type ProcSample struct {
	CPUSeconds float64 // utime + stime
	RSSBytes   int64   // VmRSS
	Threads    int
}

// SampleProc reads /proc/<pid>/stat and /proc/<pid>/status.
func SampleProc(pid int) (ProcSample, error) {
	var s ProcSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// Fields after the command name, which is in parentheses and may
	// contain spaces.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, errors.New("loadgen: unexpected /proc stat format")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return s, errors.New("loadgen: short /proc stat")
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	s.CPUSeconds = (ut + st) / clockTicks
	status, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	defer status.Close()
	sc := bufio.NewScanner(status)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "VmRSS:"):
			kb, _ := strconv.ParseInt(strings.Fields(line)[1], 10, 64)
			s.RSSBytes = kb << 10
		case strings.HasPrefix(line, "Threads:"):
			s.Threads, _ = strconv.Atoi(strings.Fields(line)[1])
		}
	}
	return s, sc.Err()
}

// ListenerPID finds the process listening on a local TCP port, through
// /proc/net/tcp{,6} and the socket links under /proc/*/fd.
func ListenerPID(port int) (int, error) {
	inodes := map[string]bool{}
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" { // 0A = LISTEN
				continue
			}
			local := f[1]
			j := strings.LastIndexByte(local, ':')
			p, err := strconv.ParseInt(local[j+1:], 16, 32)
			if err == nil && int(p) == port {
				inodes["socket:["+f[9]+"]"] = true
			}
		}
	}
	if len(inodes) == 0 {
		return 0, fmt.Errorf("loadgen: nothing listens on port %d", port)
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, d := range dirs {
		target, err := os.Readlink(d)
		if err != nil || !inodes[target] {
			continue
		}
		pid, err := strconv.Atoi(strings.Split(d, "/")[2])
		if err == nil {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("loadgen: no visible process owns the listener on port %d", port)
}
