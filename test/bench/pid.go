package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// webhookPID finds the harness's webhook process: a child of this process
// whose command line has --webhook-port=<port>. (test/harness does not
// export the pid of the processes it starts.)
func webhookPID(port int) (int, error) {
	return childPID("--webhook-port=" + strconv.Itoa(port))
}

// apiServerPID finds the kube-apiserver envtest started for the harness.
func apiServerPID() (int, error) {
	return childPID("kube-apiserver")
}

// childPID finds a child of this process one of whose command-line words
// ends with arg.
func childPID(arg string) (int, error) {
	want := []byte(arg + "\x00")
	self := os.Getpid()
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return 0, err
	}
	for _, dir := range dirs {
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if err != nil || !bytes.Contains(cmdline, want) {
			continue
		}
		if parentPID(pid) == self {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no child process with %s on its command line in /proc", arg)
}

func parentPID(pid int) int {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "PPid:"); ok {
			ppid, _ := strconv.Atoi(strings.TrimSpace(rest))
			return ppid
		}
	}
	return 0
}
