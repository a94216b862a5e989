package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/meshrole/meshrole/test/harness"
)

// The do-nothing webhook of docs/design.md, "Performance targets": it decodes the review and answers
// "allowed", nothing else. It runs as a child process (this program
// re-executed with -serve-floor) so that its CPU time and memory are its own,
// on a plain net/http TLS server with HTTP/2, like controller-runtime's.

const (
	floorPath      = harness.WebhookPath
	floorPatchPath = floorPath + "-with-patch"
	floorCountPath = "/count"
)

// floorHandler is pkg/mutate's BenchmarkAdmission floor. With a patch, it
// answers every review with that fixed JSON patch: a webhook that does
// nothing but still makes the API server apply a mutation.
type floorHandler struct {
	patch  []byte
	served atomic.Int64
}

func (f *floorHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
		http.Error(w, "not an AdmissionReview", http.StatusBadRequest)
		return
	}
	review.Response = &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true, Result: &metav1.Status{Code: http.StatusOK}}
	if f.patch != nil {
		jsonPatch := admissionv1.PatchTypeJSONPatch
		review.Response.Patch, review.Response.PatchType = f.patch, &jsonPatch
	}
	review.Request = nil
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(review)
	f.served.Add(1)
}

// serveFloor runs the do-nothing webhook on addr (loopback) until SIGTERM;
// for each file <shape>.json in patchDir it also answers with that patch on
// floorPatchPath/<shape>.
func serveFloor(addr, certDir, patchDir string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("floor webhook: %s is not a loopback address", addr)
	}
	handlers := []*floorHandler{{}}
	mux := http.NewServeMux()
	mux.Handle(floorPath, handlers[0])
	if patchDir != "" {
		files, err := filepath.Glob(filepath.Join(patchDir, "*.json"))
		if err != nil {
			return err
		}
		for _, file := range files {
			h := &floorHandler{}
			if h.patch, err = os.ReadFile(file); err != nil {
				return err
			}
			mux.Handle(floorPatchPath+"/"+strings.TrimSuffix(filepath.Base(file), ".json"), h)
			handlers = append(handlers, h)
		}
	}
	mux.HandleFunc(floorCountPath, func(w http.ResponseWriter, _ *http.Request) {
		served := int64(0)
		for _, h := range handlers {
			served += h.served.Load()
		}
		_, _ = fmt.Fprint(w, served)
	})
	srv := &http.Server{
		Addr:              addr,
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12},
		ErrorLog:          log.New(os.Stderr, "floor webhook: ", log.LstdFlags),
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	err = srv.ListenAndServeTLS(filepath.Join(certDir, "tls.crt"), filepath.Join(certDir, "tls.key"))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// floorProcess is the do-nothing webhook running as a child process.
type floorProcess struct {
	cmd    *exec.Cmd
	port   int
	client *http.Client
	done   chan struct{}
}

func (f *floorProcess) URL() string {
	return "https://127.0.0.1:" + strconv.Itoa(f.port) + floorPath
}

// PatchURL answers with the fixed patch of a shape.
func (f *floorProcess) PatchURL(shape string) string {
	return "https://127.0.0.1:" + strconv.Itoa(f.port) + floorPatchPath + "/" + shape
}

func (f *floorProcess) PID() int { return f.cmd.Process.Pid }

// startFloor re-executes this program as the do-nothing webhook, serving
// the certificate in certDir (and the patches in patchDir on PatchURL), and
// waits until it answers.
func startFloor(ctx context.Context, certDir, patchDir string, caPEM []byte, logPath string) (*floorProcess, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	ports, err := harness.FreePorts(1)
	if err != nil {
		return nil, err
	}
	port := ports[0]
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-serve-floor", "127.0.0.1:"+strconv.Itoa(port), "-floor-cert-dir", certDir, "-floor-patches", patchDir)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = childProcAttr()
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	f := &floorProcess{cmd: cmd, port: port, done: make(chan struct{}), client: &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}},
	}}
	go func() {
		_ = cmd.Wait()
		_ = logFile.Close()
		close(f.done)
	}()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := f.Served(ctx); err == nil {
			return f, nil
		} else if time.Now().After(deadline) {
			f.Stop()
			return nil, fmt.Errorf("do-nothing webhook not answering after 20s: %w (log: %s)", err, logPath)
		}
		select {
		case <-f.done:
			return nil, fmt.Errorf("do-nothing webhook exited at start-up (log: %s)", logPath)
		case <-ctx.Done():
			f.Stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Served is how many reviews the do-nothing webhook has answered.
func (f *floorProcess) Served(ctx context.Context) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://127.0.0.1:"+strconv.Itoa(f.port)+floorCountPath, nil)
	if err != nil {
		return 0, err
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(string(data), 10, 64)
}

// Stop sends SIGTERM and waits (then kills) the do-nothing webhook.
func (f *floorProcess) Stop() {
	_ = f.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-f.done:
	case <-time.After(10 * time.Second):
		_ = f.cmd.Process.Kill()
		<-f.done
	}
}

func rootsOf(caPEM []byte) *x509.CertPool {
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	return roots
}
