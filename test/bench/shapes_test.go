package main

import (
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestShapePatch(t *testing.T) {
	before := podMetadata{
		Labels:      map[string]string{"app": "eureka-server", "sidecar.istio.io/inject": "true"},
		Annotations: map[string]string{"team": "shop"},
	}
	// The shape of meshrole's answer: one operation per key.
	captured := []byte(`[
		{"op":"replace","path":"/metadata/labels/sidecar.istio.io~1inject","value":"false"},
		{"op":"add","path":"/metadata/annotations/bench.meshrole.io~1policy","value":"bench-meshrole/p-00000"},
		{"op":"add","path":"/metadata/annotations/bench.meshrole.io~1workload","value":"peers"},
		{"op":"add","path":"/metadata/annotations/bench.meshrole.io~1role","value":"peer-stateful"},
		{"op":"add","path":"/metadata/annotations/traffic.sidecar.istio.io~1excludeInboundPorts","value":"8761"}]`)
	istio := podMetadata{
		Labels:      map[string]string{"app": "eureka-server", "sidecar.istio.io/inject": "false"},
		Annotations: map[string]string{"team": "shop", "traffic.sidecar.istio.io/excludeInboundPorts": "8761"},
	}
	full := podMetadata{Labels: istio.Labels, Annotations: maps.Clone(istio.Annotations)}
	full.Annotations["bench.meshrole.io/policy"] = "bench-meshrole/p-00000"
	full.Annotations["bench.meshrole.io/workload"] = "peers"
	full.Annotations["bench.meshrole.io/role"] = "peer-stateful"
	oneRecord := podMetadata{Labels: istio.Labels, Annotations: maps.Clone(istio.Annotations)}
	oneRecord.Annotations["bench.meshrole.io/record"] = "bench-meshrole/p-00000;peers;peer-stateful"

	for _, tc := range []struct {
		shape string
		want  podMetadata
		ops   int
	}{
		{shapeMeshrole, full, 5},
		{shapeMaps, full, 2},
		{shapeIstioOnly, istio, 2},
		{shapeOneRecord, oneRecord, 3},
	} {
		t.Run(tc.shape, func(t *testing.T) {
			shaped, wants, err := shapePatch(tc.shape, before, captured)
			if err != nil {
				t.Fatal(err)
			}
			var ops []jsonPatchOp
			if err := json.Unmarshal(shaped, &ops); err != nil || len(ops) != tc.ops {
				t.Errorf("%d operations (%v), want %d: %s", len(ops), err, tc.ops, shaped)
			}
			got, err := applyMetadataPatch(before, shaped)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("the pod gets\n%v\nwant\n%v", got, tc.want)
			}
			if !hasMetadata(got.Labels, got.Annotations, wants) || hasMetadata(before.Labels, before.Annotations, wants) {
				t.Errorf("wants %v: not what tells the patched pod from the unpatched one", wants)
			}
			if tc.shape != shapeMeshrole && tc.shape != shapeMaps && strings.Contains(string(shaped), "bench.meshrole.io~1policy") {
				t.Errorf("the %s shape still writes the policy record: %s", tc.shape, shaped)
			}
		})
	}

	// A pod with no annotations gets them in one operation.
	shaped, _, err := shapePatch(shapeIstioOnly, podMetadata{Labels: before.Labels}, captured)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(shaped), `"path":"/metadata/annotations","value":{"traffic.sidecar.istio.io/excludeInboundPorts":"8761"}`) {
		t.Errorf("no whole-map operation for a pod without annotations: %s", shaped)
	}
	if _, _, err := shapePatch("nonsense", before, captured); err == nil {
		t.Error("an unknown shape was accepted")
	}
	if _, err := applyMetadataPatch(before, []byte(`[{"op":"add","path":"/spec/x","value":"y"}]`)); err == nil {
		t.Error("a patch of something else than labels and annotations was accepted")
	}
}

func TestParseShapes(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    []string
		wantErr bool
	}{
		{in: "none"},
		{in: "maps, one-record,maps", want: []string{shapeMaps, shapeOneRecord}},
		{in: "meshrole", wantErr: true},
		{in: "maps,json-merge", wantErr: true},
	} {
		got, err := parseShapes(tt.in)
		if (err != nil) != tt.wantErr || !slices.Equal(got, tt.want) {
			t.Errorf("parseShapes(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}
