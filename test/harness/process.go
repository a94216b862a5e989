package harness

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a child process whose stdout and stderr go to a log file.
type Process struct {
	// Name is used in messages.
	Name string
	// Path and Args (without argv[0]) of the command.
	Path string
	Args []string
	// LogPath receives stdout and stderr, appended across restarts.
	LogPath string
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL (10s when zero).
	StopTimeout time.Duration

	mu      sync.Mutex
	cmd     *exec.Cmd
	logFile *os.File
	done    chan struct{}
	waitErr error
}

// Start starts the process. It fails if the process is already running.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("%s is already running (pid %d)", p.Name, p.cmd.Process.Pid)
		}
	}
	f, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("%s: log file: %w", p.Name, err)
	}
	_, _ = fmt.Fprintf(f, "==== %s: starting %s %s\n", time.Now().Format(time.RFC3339Nano), p.Path, strings.Join(p.Args, " "))
	cmd := exec.Command(p.Path, p.Args...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return fmt.Errorf("%s: start %s: %w", p.Name, p.Path, err)
	}
	p.cmd, p.logFile, p.done, p.waitErr = cmd, f, make(chan struct{}), nil
	done := p.done
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		_, _ = fmt.Fprintf(f, "==== %s: %s exited: %v\n", time.Now().Format(time.RFC3339Nano), p.Name, exitText(err))
		_ = f.Close()
		close(done)
	}()
	return nil
}

// Running reports whether the process has been started and has not exited.
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Exited is closed when the process exits; nil if it was never started.
func (p *Process) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// ExitError is the result of the last run's Wait, once it exited.
func (p *Process) ExitError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.waitErr
}

// ExitStatus describes how the last run ended ("exit status 0", "signal:
// killed", ...); "" while it runs or before it started.
func (p *Process) ExitStatus() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		return ""
	}
	select {
	case <-p.done:
		return exitText(p.waitErr)
	default:
		return ""
	}
}

// Stop sends SIGTERM, waits up to StopTimeout for the process to exit, then
// kills it. Stopping a process that is not running is a no-op. A process that
// exits on SIGTERM with a non-zero status is not an error; one that had to be
// killed is.
func (p *Process) Stop() error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	timeout := p.StopTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("%s: SIGTERM: %w", p.Name, err)
	}
	select {
	case <-done:
		return nil
	case <-time.After(timeout):
	}
	_ = cmd.Process.Kill()
	<-done
	return fmt.Errorf("%s did not exit within %v of SIGTERM and was killed", p.Name, timeout)
}

// Signal sends sig to the running process and returns at once.
func (p *Process) Signal(sig os.Signal) error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("%s was never started", p.Name)
	}
	select {
	case <-done:
		return fmt.Errorf("%s is not running (%s)", p.Name, p.ExitStatus())
	default:
	}
	if err := cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("%s: %v: %w", p.Name, sig, err)
	}
	return nil
}

// LogTail returns the last n lines of the log file.
func (p *Process) LogTail(n int) string {
	return tailFile(p.LogPath, n)
}

func tailFile(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer func() { _ = f.Close() }()
	const max = 256 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > max {
		_, _ = f.Seek(fi.Size()-max, io.SeekStart)
	}
	data, _ := io.ReadAll(f)
	data = bytes.TrimRight(data, "\n")
	lines := strings.Split(string(data), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func exitText(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}
