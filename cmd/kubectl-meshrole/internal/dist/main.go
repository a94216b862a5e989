// Command dist is `make dist`: it cross-compiles kubectl-meshrole for every
// platform the krew manifest lists, packs each binary into an archive
// (tar.gz, zip for Windows) with a .sha256 file beside it, and writes the
// krew manifest naming those archives and their sha256 — into the output
// directory for the release and over plugins/meshrole.yaml for the
// repository.
//
// Archives are byte-for-byte reproducible for a given commit and Go
// version (fixed timestamps and owners, -trimpath), so a release built from
// the tagged commit matches the manifest committed with it.
package main

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"text/template"
	"time"
)

// platform is one os/arch krew installs the plugin on.
type platform struct {
	OS, Arch string
	// Filled in as the platform is built.
	Binary, Archive, SHA256 string
}

var platforms = []platform{
	{OS: "linux", Arch: "amd64"},
	{OS: "linux", Arch: "arm64"},
	{OS: "darwin", Arch: "amd64"},
	{OS: "darwin", Arch: "arm64"},
	{OS: "windows", Arch: "amd64"},
}

// epoch is every archived file's time: reproducible archives. Zip cannot
// say earlier than 1980.
var epoch = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// semver is what krew accepts as a version.
var semver = regexp.MustCompile(`^v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$`)

func main() {
	version := flag.String("version", "", "the release, vMAJOR.MINOR.PATCH (krew requires semver)")
	out := flag.String("out", "bin/dist", "directory for the archives, their .sha256 files and the release's manifest")
	manifest := flag.String("manifest", "plugins/meshrole.yaml", "the repository's krew manifest, rewritten with the archives' sha256")
	repo := flag.String("repo", "github.com/meshrole/meshrole", "repository whose releases serve the archives")
	flag.Parse()
	if err := run(*version, *out, *manifest, *repo); err != nil {
		fmt.Fprintln(os.Stderr, "dist:", err)
		os.Exit(1)
	}
}

func run(version, out, manifestPath, repo string) error {
	if !semver.MatchString(version) {
		return fmt.Errorf("-version %q: krew needs a semantic version such as v0.1.0", version)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "meshrole-dist")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(work) }()

	for i := range platforms {
		p := &platforms[i]
		if err := build(p, version, work, out); err != nil {
			return fmt.Errorf("%s/%s: %w", p.OS, p.Arch, err)
		}
		fmt.Printf("%s  %s\n", p.SHA256, filepath.Join(out, p.Archive))
	}

	var manifest bytes.Buffer
	if err := manifestTemplate.Execute(&manifest, map[string]any{"Version": version, "Repo": repo, "Platforms": platforms}); err != nil {
		return err
	}
	for _, path := range []string{filepath.Join(out, "meshrole.yaml"), manifestPath} {
		if err := os.WriteFile(path, manifest.Bytes(), 0o644); err != nil {
			return err
		}
		fmt.Println("wrote", path)
	}
	return nil
}

// build compiles p's binary into work and packs it into out.
func build(p *platform, version, work, out string) error {
	p.Binary = "kubectl-meshrole"
	if p.OS == "windows" {
		p.Binary += ".exe"
	}
	binary := filepath.Join(work, p.OS+"-"+p.Arch, p.Binary)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+version, "-o", binary, "./cmd/kubectl-meshrole")
	cmd.Env = append(os.Environ(), "GOOS="+p.OS, "GOARCH="+p.Arch, "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build: %w", err)
	}
	content, err := os.ReadFile(binary)
	if err != nil {
		return err
	}

	var archive bytes.Buffer
	base := "kubectl-meshrole_" + p.OS + "_" + p.Arch
	if p.OS == "windows" {
		p.Archive = base + ".zip"
		err = writeZip(&archive, p.Binary, content)
	} else {
		p.Archive = base + ".tar.gz"
		err = writeTarGz(&archive, p.Binary, content)
	}
	if err != nil {
		return err
	}
	sum := sha256.Sum256(archive.Bytes())
	p.SHA256 = hex.EncodeToString(sum[:])
	if err := os.WriteFile(filepath.Join(out, p.Archive), archive.Bytes(), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, p.Archive+".sha256"), []byte(p.SHA256+"  "+p.Archive+"\n"), 0o644)
}

func writeTarGz(w io.Writer, name string, content []byte) error {
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	header := &tar.Header{Name: name, Mode: 0o755, Size: int64(len(content)), ModTime: epoch, Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}
	if err := tw.WriteHeader(header); err != nil {
		return err
	}
	if _, err := tw.Write(content); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

func writeZip(w io.Writer, name string, content []byte) error {
	zw := zip.NewWriter(w)
	header := &zip.FileHeader{Name: name, Method: zip.Deflate, Modified: epoch}
	header.SetMode(0o755)
	f, err := zw.CreateHeader(header)
	if err != nil {
		return err
	}
	if _, err := f.Write(content); err != nil {
		return err
	}
	return zw.Close()
}

var manifestTemplate = template.Must(template.New("manifest").Parse(`# The krew manifest of kubectl meshrole. Written by make dist (the archives'
# sha256 change with every build): edit cmd/kubectl-meshrole/internal/dist.
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: meshrole
spec:
  version: {{.Version}}
  homepage: https://{{.Repo}}
  shortDescription: Explain and audit meshrole's Istio sidecar policies
  description: |
    meshrole is a mutating admission webhook that stamps Istio sidecar-injection
    keys on pods by policy (MeshRolePolicy, ClusterMeshRolePolicy). This plugin
    shows, offline, what those policies do to your workloads (explain), what
    native mode would generate (native), and where a live cluster still has the
    traps meshrole removes (audit). It takes kubectl's flags: -n, --context,
    --as, -o yaml, -f with directories and stdin.
  caveats: |
    audit reads the cluster of your kubeconfig's current context (or --context):
    it needs to list pods, StatefulSets, Services, namespaces, meshrole's
    policies and mutating webhook configurations.
    Shell completion: see https://{{.Repo}}/blob/main/docs/plugin.md
  platforms:
{{- range .Platforms}}
  - selector:
      matchLabels:
        os: {{.OS}}
        arch: {{.Arch}}
    uri: https://{{$.Repo}}/releases/download/{{$.Version}}/{{.Archive}}
    sha256: {{.SHA256}}
    files:
    - from: {{.Binary}}
      to: .
    bin: {{.Binary}}
{{- end}}
`))
