package policy

import (
	"reflect"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
)

// exactLabel must be indistinguishable from the selector labels parses:
// native mode compiles its Requirements, status and explain print it.
func TestExactLabelIsTheParsedSelector(t *testing.T) {
	ls := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "eureka-server"}}
	got, err := compileSelector(ls)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got.(*exactLabel); !ok {
		t.Fatalf("compileSelector gave a %T, want *exactLabel", got)
	}
	want, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []labels.Set{nil, {}, {"app": "eureka-server"}, {"app": "eureka-server", "x": "y"}, {"app": "other"}, {"App": "eureka-server"}} {
		if got.Matches(l) != want.Matches(l) {
			t.Errorf("Matches(%v) = %v, parsed says %v", l, got.Matches(l), want.Matches(l))
		}
	}
	if got.String() != want.String() || got.Empty() != want.Empty() {
		t.Errorf("String %q Empty %v, parsed %q %v", got.String(), got.Empty(), want.String(), want.Empty())
	}
	gr, gs := got.Requirements()
	wr, ws := want.Requirements()
	if !reflect.DeepEqual(gr, wr) || gs != ws {
		t.Errorf("Requirements %v %v, parsed %v %v", gr, gs, wr, ws)
	}
	for _, key := range []string{"app", "x"} {
		gv, gf := got.RequiresExactMatch(key)
		wv, wf := want.RequiresExactMatch(key)
		if gv != wv || gf != wf {
			t.Errorf("RequiresExactMatch(%s) = %q %v, parsed %q %v", key, gv, gf, wv, wf)
		}
	}
	r, err := labels.NewRequirement("tier", selection.Exists, nil)
	if err != nil {
		t.Fatal(err)
	}
	if g, w := got.Add(*r).String(), want.Add(*r).String(); g != w {
		t.Errorf("Add: %q, parsed %q", g, w)
	}
	if got.DeepCopySelector().String() != want.String() {
		t.Errorf("DeepCopySelector: %q", got.DeepCopySelector().String())
	}

	// Anything else is parsed as before, including the errors.
	for _, other := range []*metav1.LabelSelector{
		{},
		{MatchLabels: map[string]string{"a": "1", "b": "2"}},
		{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: metav1.LabelSelectorOpExists}}},
	} {
		if s, err := compileSelector(other); err != nil || reflect.TypeOf(s) == reflect.TypeOf(&exactLabel{}) {
			t.Errorf("%v: %T, %v; want the parsed selector", other, s, err)
		}
	}
	if _, err := compileSelector(&metav1.LabelSelector{MatchLabels: map[string]string{"app": "not valid!"}}); err == nil {
		t.Error("an invalid label value was accepted")
	}
}
