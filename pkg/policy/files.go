package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
)

// Document is one object read from a YAML or JSON stream.
type Document struct {
	APIVersion string
	Kind       string
	// Raw is the object as JSON.
	Raw []byte
}

// ReadDocuments splits a stream of YAML (--- separated) or JSON objects.
// Empty documents are skipped.
func ReadDocuments(r io.Reader) ([]Document, error) {
	decoder := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	var docs []Document
	for {
		var raw json.RawMessage
		if err := decoder.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return docs, nil
			}
			return nil, err
		}
		if len(raw) == 0 || string(raw) == "null" {
			continue
		}
		var meta struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
		}
		if err := json.Unmarshal(raw, &meta); err != nil {
			return nil, fmt.Errorf("document %d: %w", len(docs)+1, err)
		}
		docs = append(docs, Document{APIVersion: meta.APIVersion, Kind: meta.Kind, Raw: raw})
	}
}

// Add stores doc if it is a meshrole policy and reports whether it was one.
// A MeshRolePolicy without a namespace goes to defaultNamespace, as kubectl
// apply would put it in the context's namespace.
func (s *Store) Add(doc Document, defaultNamespace string) (bool, error) {
	if doc.APIVersion != v1alpha1.GroupVersion.String() {
		return false, nil
	}
	switch doc.Kind {
	case "MeshRolePolicy":
		var p v1alpha1.MeshRolePolicy
		if err := json.Unmarshal(doc.Raw, &p); err != nil {
			return false, fmt.Errorf("reading a MeshRolePolicy: %w", err)
		}
		if p.Namespace == "" {
			p.Namespace = defaultNamespace
		}
		s.SetMeshRolePolicy(&p)
	case "ClusterMeshRolePolicy":
		var p v1alpha1.ClusterMeshRolePolicy
		if err := json.Unmarshal(doc.Raw, &p); err != nil {
			return false, fmt.Errorf("reading a ClusterMeshRolePolicy: %w", err)
		}
		s.SetClusterMeshRolePolicy(&p)
	default:
		return false, nil
	}
	return true, nil
}

// LoadFile reads a file of policies (YAML or JSON) into a new Store, and the
// labels of the v1 Namespaces the file also holds: a fixture carries the
// namespaces its policies decide in. Any other kind is an error.
func LoadFile(path, defaultNamespace string) (*Store, map[string]map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer func() { _ = f.Close() }()
	docs, err := ReadDocuments(f)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	store := NewStore()
	namespaces := map[string]map[string]string{}
	for _, doc := range docs {
		if doc.APIVersion == "v1" && doc.Kind == "Namespace" {
			var ns struct {
				Metadata struct {
					Name   string            `json:"name"`
					Labels map[string]string `json:"labels"`
				} `json:"metadata"`
			}
			if err := json.Unmarshal(doc.Raw, &ns); err != nil {
				return nil, nil, fmt.Errorf("%s: reading a Namespace: %w", path, err)
			}
			namespaces[ns.Metadata.Name] = ns.Metadata.Labels
			continue
		}
		ok, err := store.Add(doc, defaultNamespace)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", path, err)
		}
		if !ok {
			return nil, nil, fmt.Errorf("%s: %s %s is neither a meshrole policy nor a Namespace", path, doc.APIVersion, doc.Kind)
		}
	}
	return store, namespaces, nil
}
