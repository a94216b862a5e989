package harness

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const modulePath = "github.com/meshrole/meshrole"

// RepoRoot walks up from the working directory to the directory whose
// go.mod declares meshrole's module.
func RepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; {
		if moduleOf(filepath.Join(dir, "go.mod")) == modulePath {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod for module %s in %s or any parent directory", modulePath, wd)
		}
		dir = parent
	}
}

func moduleOf(gomod string) string {
	f, err := os.Open(gomod)
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(s.Text()), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// K8sBinDir is $MESHROLE_K8S_BIN or <root>/bin/k8s; it must hold
// kube-apiserver, etcd, kubectl and kube-controller-manager.
func K8sBinDir(root string) (string, error) {
	dir := os.Getenv(EnvK8sBin)
	if dir == "" {
		dir = filepath.Join(root, "bin", "k8s")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	var missing []string
	for _, name := range []string{"kube-apiserver", "etcd", "kubectl", "kube-controller-manager"} {
		if !isExecutable(filepath.Join(dir, name)) {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("control-plane binaries missing from %s: %s; run `make testenv` (or set %s to a directory holding them)",
			dir, strings.Join(missing, ", "), EnvK8sBin)
	}
	return dir, nil
}

// WebhookBinary is $MESHROLE_WEBHOOK_BIN or <root>/bin/webhook.
func WebhookBinary(root string) (string, error) {
	path := os.Getenv(EnvWebhookBin)
	if path == "" {
		path = filepath.Join(root, "bin", "webhook")
	}
	path, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	if !isExecutable(path) {
		return "", fmt.Errorf("webhook binary %s missing; run `make build` (or set %s)", path, EnvWebhookBin)
	}
	return path, nil
}

// StaleSources lists Go files under cmd/webhook/ and pkg/ newer than the
// webhook binary at path: a hint that `make build` was not run after the
// last edit.
func StaleSources(root, path string) []string {
	fi, err := os.Stat(path)
	if err != nil {
		return nil
	}
	built := fi.ModTime()
	var newer []string
	for _, dir := range []string{filepath.Join("cmd", "webhook"), "pkg"} {
		_ = filepath.WalkDir(filepath.Join(root, dir), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return nil
			}
			if info, err := d.Info(); err == nil && info.ModTime().After(built.Add(time.Second)) {
				rel, _ := filepath.Rel(root, p)
				newer = append(newer, rel)
			}
			return nil
		})
	}
	return newer
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}
