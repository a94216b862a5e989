package loadgen

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is USER_HZ, the unit of utime and stime in /proc/<pid>/stat: 100
// on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// ProcessCPU is the user+system CPU time process pid has used so far, from
// /proc/<pid>/stat (Linux), with 10 ms resolution.
func ProcessCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("loadgen: CPU time of pid %d: %w", pid, err)
	}
	return parseStatCPU(data)
}

// parseStatCPU reads utime and stime, fields 14 and 15 of a
// /proc/<pid>/stat line; the command name (field 2) may contain spaces and
// parentheses, so fields are counted after its closing parenthesis.
func parseStatCPU(data []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, fmt.Errorf("loadgen: malformed /proc stat line %q", data)
	}
	fields := strings.Fields(string(data[i+1:]))
	// fields[0] is field 3 (state): utime is field 14, stime field 15.
	if len(fields) < 13 {
		return 0, fmt.Errorf("loadgen: short /proc stat line %q", data)
	}
	utime, err1 := strconv.ParseInt(fields[11], 10, 64)
	stime, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("loadgen: malformed utime/stime in %q", data)
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// ProcessRSS is process pid's resident set size in bytes (VmRSS from
// /proc/<pid>/status, Linux).
func ProcessRSS(pid int) (int64, error) {
	return procStatusBytes(pid, "VmRSS")
}

// ProcessPeakRSS is process pid's peak resident set size in bytes (VmHWM).
func ProcessPeakRSS(pid int) (int64, error) {
	return procStatusBytes(pid, "VmHWM")
}

func procStatusBytes(pid int, key string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("loadgen: %s of pid %d: %w", key, pid, err)
	}
	defer func() { _ = f.Close() }()
	s := bufio.NewScanner(f)
	for s.Scan() {
		rest, ok := strings.CutPrefix(s.Text(), key+":")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, fmt.Errorf("loadgen: malformed %s line %q", key, s.Text())
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("loadgen: malformed %s line %q", key, s.Text())
		}
		return kb << 10, nil
	}
	if err := s.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("loadgen: no %s in /proc/%d/status", key, pid)
}

// LoadAverage is the machine's 1, 5 and 15 minute load averages from
// /proc/loadavg, "?" where there is none: the benches print it beside their
// figures, so that a busy machine shows in them.
func LoadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
