package main

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"io"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// The same binary packs into the same bytes, and unpacks to it, executable.
func TestArchivesAreReproducible(t *testing.T) {
	content := []byte("a binary")
	var first, second bytes.Buffer
	if err := writeTarGz(&first, "kubectl-meshrole", content); err != nil {
		t.Fatal(err)
	}
	if err := writeTarGz(&second, "kubectl-meshrole", content); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.Bytes(), second.Bytes()) {
		t.Error("two tar.gz of the same binary differ")
	}
	gz, err := gzip.NewReader(&first)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	header, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(tr)
	if header.Name != "kubectl-meshrole" || header.Mode != 0o755 || !bytes.Equal(got, content) {
		t.Errorf("tar.gz holds %s mode %o %q", header.Name, header.Mode, got)
	}

	var z1, z2 bytes.Buffer
	if err := writeZip(&z1, "kubectl-meshrole.exe", content); err != nil {
		t.Fatal(err)
	}
	if err := writeZip(&z2, "kubectl-meshrole.exe", content); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(z1.Bytes(), z2.Bytes()) {
		t.Error("two zips of the same binary differ")
	}
	zr, err := zip.NewReader(bytes.NewReader(z1.Bytes()), int64(z1.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if len(zr.File) != 1 || zr.File[0].Name != "kubectl-meshrole.exe" {
		t.Errorf("zip holds %d files", len(zr.File))
	}
}

// The manifest is krew's Plugin with one platform per archive.
func TestManifest(t *testing.T) {
	ps := []platform{
		{OS: "linux", Arch: "amd64", Binary: "kubectl-meshrole", Archive: "kubectl-meshrole_linux_amd64.tar.gz", SHA256: strings.Repeat("a", 64)},
		{OS: "windows", Arch: "amd64", Binary: "kubectl-meshrole.exe", Archive: "kubectl-meshrole_windows_amd64.zip", SHA256: strings.Repeat("b", 64)},
	}
	var out bytes.Buffer
	if err := manifestTemplate.Execute(&out, map[string]any{"Version": "v1.2.3", "Repo": "example.org/meshrole", "Platforms": ps}); err != nil {
		t.Fatal(err)
	}
	var m struct {
		APIVersion, Kind string
		Metadata         struct{ Name string }
		Spec             struct {
			Version   string
			Platforms []struct {
				Selector struct{ MatchLabels map[string]string }
				URI      string
				SHA256   string
				Bin      string
				Files    []struct{ From, To string }
			}
		}
	}
	if err := yaml.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if m.Kind != "Plugin" || m.Metadata.Name != "meshrole" || m.Spec.Version != "v1.2.3" || len(m.Spec.Platforms) != 2 {
		t.Fatalf("manifest: %+v", m)
	}
	w := m.Spec.Platforms[1]
	if w.Selector.MatchLabels["os"] != "windows" || w.URI != "https://example.org/meshrole/releases/download/v1.2.3/kubectl-meshrole_windows_amd64.zip" ||
		w.SHA256 != strings.Repeat("b", 64) || w.Bin != "kubectl-meshrole.exe" || len(w.Files) != 1 || w.Files[0].From != "kubectl-meshrole.exe" {
		t.Errorf("windows platform: %+v", w)
	}
	if !semver.MatchString("v0.1.0") || semver.MatchString("0.1.0") || semver.MatchString("abc123") {
		t.Error("semver check")
	}
}
