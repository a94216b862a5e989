package harness

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Webhook is the meshrole webhook server running as a child process on
// 127.0.0.1. Its ports are chosen once, so it can be stopped and started
// again behind the same webhook configuration.
type Webhook struct {
	Port        int
	ProbePort   int
	MetricsPort int

	// Native is set when the server runs in native mode: it serves no
	// admissions, so only its readiness is waited for.
	Native bool

	proc   *Process
	caPEM  []byte
	client *http.Client
}

// WebhookProcess describes a meshrole server for NewWebhook.
type WebhookProcess struct {
	// Name names the process in messages ("meshrole webhook").
	Name string
	// Bin is the server's binary; LogPath receives its output, appended
	// across restarts.
	Bin     string
	LogPath string
	// CertDir holds the serving certificate (tls.crt, tls.key) and CAPEM is
	// the CA that signed it; native mode uses neither.
	CertDir string
	CAPEM   []byte
	// Args are the server's arguments but for its listen addresses and
	// --cert-dir, which NewWebhook sets (any given here are dropped).
	// "--mode=native" among them: native mode, no webhook port.
	Args []string
}

// flagsNewWebhookSets are the flags NewWebhook gives the server itself.
var flagsNewWebhookSets = []string{
	"--webhook-host", "--webhook-port", "--cert-dir", "--health-probe-bind-address", "--metrics-bind-address",
}

// NewWebhook prepares a meshrole server on new ports of 127.0.0.1; Start
// starts it.
func NewWebhook(p WebhookProcess) (*Webhook, error) {
	w := &Webhook{Native: slices.Contains(p.Args, "--mode=native"), caPEM: p.CAPEM, client: &http.Client{Timeout: time.Second}}
	n := 3
	if w.Native {
		n = 2
	}
	ports, err := FreePorts(n)
	if err != nil {
		return nil, err
	}
	w.ProbePort, w.MetricsPort = ports[0], ports[1]
	args := slices.DeleteFunc(slices.Clone(p.Args), func(arg string) bool {
		name, _, _ := strings.Cut(arg, "=")
		return slices.Contains(flagsNewWebhookSets, name)
	})
	args = append(args,
		"--health-probe-bind-address=127.0.0.1:"+strconv.Itoa(w.ProbePort),
		"--metrics-bind-address=127.0.0.1:"+strconv.Itoa(w.MetricsPort),
	)
	if !w.Native {
		w.Port = ports[2]
		args = append(args,
			"--webhook-host=127.0.0.1",
			"--webhook-port="+strconv.Itoa(w.Port),
			"--cert-dir="+p.CertDir,
		)
	}
	w.proc = &Process{Name: p.Name, Path: p.Bin, Args: args, LogPath: p.LogPath, StopTimeout: 15 * time.Second}
	return w, nil
}

// newWebhook prepares a webhook process as the harness runs it, logging to
// <workDir>/<name>.log.
func newWebhook(name, bin, workDir, certDir, kubeconfig string, caPEM []byte, extra []string) (*Webhook, error) {
	return NewWebhook(WebhookProcess{
		Name:    "meshrole " + name,
		Bin:     bin,
		LogPath: filepath.Join(workDir, name+".log"),
		CertDir: certDir,
		CAPEM:   caPEM,
		Args: append([]string{
			"--kubeconfig=" + kubeconfig,
			"--webhook-configuration-name=" + WebhookConfigurationName,
			"--leader-elect=false",
		}, extra...),
	})
}

// URL is the webhook's endpoint as the API server calls it.
func (w *Webhook) URL() string {
	return fmt.Sprintf("https://127.0.0.1:%d%s", w.Port, WebhookPath)
}

// MetricsURL is the webhook's Prometheus endpoint.
func (w *Webhook) MetricsURL() string {
	return fmt.Sprintf("http://127.0.0.1:%d/metrics", w.MetricsPort)
}

// LogPath is the webhook's log file (appended to across restarts).
func (w *Webhook) LogPath() string { return w.proc.LogPath }

// LogTail returns the last n lines of the webhook's log.
func (w *Webhook) LogTail(n int) string { return w.proc.LogTail(n) }

// Args is the webhook's command line, without the binary.
func (w *Webhook) Args() []string { return slices.Clone(w.proc.Args) }

// Running reports whether the webhook process is up.
func (w *Webhook) Running() bool { return w.proc.Running() }

// Start starts the webhook and waits until /readyz answers 200 and the
// webhook port completes a TLS handshake with a certificate the CA signed.
func (w *Webhook) Start(ctx context.Context) error {
	if err := w.proc.Start(); err != nil {
		return err
	}
	if err := w.waitReady(ctx, 60*time.Second); err != nil {
		_ = w.proc.Stop()
		return fmt.Errorf("%w\n--- %s log (%s):\n%s", err, w.proc.Name, w.proc.LogPath, w.proc.LogTail(40))
	}
	return nil
}

// Stop sends SIGTERM and waits for the webhook to exit.
func (w *Webhook) Stop() error { return w.proc.Stop() }

// Signal sends sig (e.g. SIGTERM, as the kubelet does when its pod is
// deleted) to the webhook and returns at once; Exited and ExitStatus tell
// when and how it ended.
func (w *Webhook) Signal(sig os.Signal) error { return w.proc.Signal(sig) }

func (w *Webhook) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(w.caPEM)
	readyz := fmt.Sprintf("http://127.0.0.1:%d/readyz", w.ProbePort)
	var last string
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-w.proc.Exited():
			return fmt.Errorf("%s exited before it was ready (%s)", w.proc.Name, w.proc.ExitStatus())
		case <-ctx.Done():
			return fmt.Errorf("%s not ready after %v: %s", w.proc.Name, timeout, last)
		case <-tick.C:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, readyz, nil)
		resp, err := w.client.Do(req)
		if err != nil {
			last = err.Error()
			continue
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			last = fmt.Sprintf("%s answered %s", readyz, resp.Status)
			continue
		}
		if w.Native {
			return nil
		}
		d := tls.Dialer{Config: &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}}
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(w.Port)))
		if err != nil {
			last = "webhook port: " + err.Error()
			continue
		}
		_ = conn.Close()
		return nil
	}
}

// FreePorts returns n distinct ports free on 127.0.0.1 right now.
func FreePorts(n int) ([]int, error) {
	var ports []int
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("picking a free port: %w", err)
		}
		lns = append(lns, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Exited is closed when the webhook process exits.
func (w *Webhook) Exited() <-chan struct{} { return w.proc.Exited() }

// ExitStatus describes how the webhook process ended; "" while it runs.
func (w *Webhook) ExitStatus() string { return w.proc.ExitStatus() }
