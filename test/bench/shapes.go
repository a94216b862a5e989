package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/meshrole/meshrole/pkg/policy"
)

// Patch shapes for the patch-shape study (issue 17): the same verdict written
// in different JSON patches, each answered by the do-nothing webhook for a
// namespace of its own, as variants of one run (-patch-shapes), to see what
// the shape costs the API server.
const (
	// shapeMeshrole: the patch meshrole answers, as captured.
	shapeMeshrole = "meshrole"
	// shapeMaps: one operation replacing each map (labels, annotations)
	// with the whole map the pod ends up with.
	shapeMaps = "maps"
	// shapeIstioOnly: one operation per key, only the keys Istio reads: no
	// record of the verdict.
	shapeIstioOnly = "istio-only"
	// shapeOneRecord: the keys Istio reads, one operation per key, and one
	// record annotation instead of meshrole's three.
	shapeOneRecord = "one-record"
)

var patchShapes = []string{shapeMeshrole, shapeMaps, shapeIstioOnly, shapeOneRecord}

// parseShapes reads -patch-shapes: other shapes than meshrole's, or none.
func parseShapes(v string) ([]string, error) {
	if v == "none" || v == "" {
		return nil, nil
	}
	var out []string
	for _, shape := range strings.Split(v, ",") {
		shape = strings.TrimSpace(shape)
		if shape == shapeMeshrole || !slices.Contains(patchShapes, shape) {
			return nil, fmt.Errorf("patch shape %q: one of %s (meshrole's own always runs)", shape, strings.Join(patchShapes[1:], ", "))
		}
		if !slices.Contains(out, shape) {
			out = append(out, shape)
		}
	}
	return out, nil
}

// benchRecordPrefix is where capturePatch moves meshrole's record keys.
const benchRecordPrefix = "bench." + policy.KeyPrefix

// jsonPatchOp is one RFC 6902 operation.
type jsonPatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// podMetadata is what a shape writes: the pod's labels and annotations.
type podMetadata struct {
	Labels, Annotations map[string]string
}

// applyMetadataPatch applies a patch of the pod's labels and annotations, the
// only kind meshrole answers, to a copy of before.
func applyMetadataPatch(before podMetadata, patch []byte) (podMetadata, error) {
	var ops []jsonPatchOp
	if err := json.Unmarshal(patch, &ops); err != nil {
		return podMetadata{}, fmt.Errorf("reading the patch: %w", err)
	}
	after := podMetadata{Labels: maps.Clone(before.Labels), Annotations: maps.Clone(before.Annotations)}
	for _, op := range ops {
		var m *map[string]string
		var key string
		switch rest, _ := strings.CutPrefix(op.Path, "/metadata/"); {
		case rest == "labels" || strings.HasPrefix(rest, "labels/"):
			m, key = &after.Labels, strings.TrimPrefix(strings.TrimPrefix(rest, "labels"), "/")
		case rest == "annotations" || strings.HasPrefix(rest, "annotations/"):
			m, key = &after.Annotations, strings.TrimPrefix(strings.TrimPrefix(rest, "annotations"), "/")
		default:
			return podMetadata{}, fmt.Errorf("patch operation %s %s: not a label or annotation", op.Op, op.Path)
		}
		key = strings.NewReplacer("~1", "/", "~0", "~").Replace(key)
		switch {
		case op.Op == "remove" && key != "":
			delete(*m, key)
		case op.Op == "remove":
			*m = nil
		case (op.Op == "add" || op.Op == "replace") && key != "":
			v, ok := op.Value.(string)
			if !ok {
				return podMetadata{}, fmt.Errorf("patch operation %s %s: value %v is not a string", op.Op, op.Path, op.Value)
			}
			if *m == nil {
				*m = map[string]string{}
			}
			(*m)[key] = v
		case op.Op == "add" || op.Op == "replace":
			whole := map[string]string{}
			raw, err := json.Marshal(op.Value)
			if err == nil {
				err = json.Unmarshal(raw, &whole)
			}
			if err != nil {
				return podMetadata{}, fmt.Errorf("patch operation %s %s: %w", op.Op, op.Path, err)
			}
			*m = whole
		default:
			return podMetadata{}, fmt.Errorf("patch operation %q: meshrole answers add, replace and remove only", op.Op)
		}
	}
	return after, nil
}

// shapePatch writes the verdict that patch gives a pod with the metadata
// before in another shape, and returns that patch with what the pod must
// have after it (the labels and annotations the shape sets).
func shapePatch(shape string, before podMetadata, patch []byte) ([]byte, podMetadata, error) {
	after, err := applyMetadataPatch(before, patch)
	if err != nil {
		return nil, podMetadata{}, err
	}
	var ops []jsonPatchOp
	switch shape {
	case shapeMeshrole:
		return patch, changed(before, after), nil
	case shapeMaps:
		ops = append(ops, jsonPatchOp{Op: "add", Path: "/metadata/labels", Value: after.Labels},
			jsonPatchOp{Op: "add", Path: "/metadata/annotations", Value: after.Annotations})
	case shapeIstioOnly, shapeOneRecord:
		var record []string
		for _, k := range []string{policy.PolicyAnnotation, policy.WorkloadAnnotation, policy.RoleAnnotation} {
			if v, ok := after.Annotations["bench."+k]; ok {
				record = append(record, v)
			}
		}
		for k := range after.Annotations {
			if strings.HasPrefix(k, benchRecordPrefix) {
				delete(after.Annotations, k)
			}
		}
		if shape == shapeOneRecord {
			if len(record) == 0 {
				return nil, podMetadata{}, fmt.Errorf("the patch writes no %s record to fold into one", policy.KeyPrefix)
			}
			after.Annotations[benchRecordPrefix+"record"] = strings.Join(record, ";")
		}
		ops = append(perKeyOps("/metadata/labels", before.Labels, after.Labels), perKeyOps("/metadata/annotations", before.Annotations, after.Annotations)...)
	default:
		return nil, podMetadata{}, fmt.Errorf("patch shape %q: one of %s", shape, strings.Join(patchShapes, ", "))
	}
	shaped, err := json.Marshal(ops)
	if err != nil {
		return nil, podMetadata{}, err
	}
	return shaped, changed(before, after), nil
}

// perKeyOps is one operation per key that differs between the maps at path,
// or one adding the whole map when the pod had none.
func perKeyOps(path string, before, after map[string]string) []jsonPatchOp {
	if len(before) == 0 {
		if len(after) == 0 {
			return nil
		}
		return []jsonPatchOp{{Op: "add", Path: path, Value: after}}
	}
	var ops []jsonPatchOp
	for _, k := range slices.Sorted(maps.Keys(after)) {
		if v, ok := before[k]; !ok || v != after[k] {
			ops = append(ops, jsonPatchOp{Op: "add", Path: path + "/" + policy.KeyPointerToken(k), Value: after[k]})
		}
	}
	for _, k := range slices.Sorted(maps.Keys(before)) {
		if _, ok := after[k]; !ok {
			ops = append(ops, jsonPatchOp{Op: "remove", Path: path + "/" + policy.KeyPointerToken(k)})
		}
	}
	return ops
}

// changed is what after sets that before did not have.
func changed(before, after podMetadata) podMetadata {
	diff := func(b, a map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range a {
			if old, ok := b[k]; !ok || old != v {
				out[k] = v
			}
		}
		return out
	}
	return podMetadata{Labels: diff(before.Labels, after.Labels), Annotations: diff(before.Annotations, after.Annotations)}
}

// hasMetadata reports whether a pod's labels and annotations include want.
func hasMetadata(labels, annotations map[string]string, want podMetadata) bool {
	for k, v := range want.Labels {
		if labels[k] != v {
			return false
		}
	}
	for k, v := range want.Annotations {
		if annotations[k] != v {
			return false
		}
	}
	return true
}
