package policy

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// compileSelector parses a label selector once, when a policy is stored.
// Most selectors are one matchLabels pair (app: eureka-server); those are
// kept as exactLabel, which shares the policy's strings: a parsed selector
// takes about 100 bytes in four allocations, an exactLabel 32 in one, and
// it matches as fast. labels.ValidatedSetSelector would take no memory at
// all, but ranging over its map makes every match about three times slower.
func compileSelector(s *metav1.LabelSelector) (labels.Selector, error) {
	parsed, err := metav1.LabelSelectorAsSelector(s)
	if err != nil || len(s.MatchLabels) != 1 || len(s.MatchExpressions) != 0 {
		return parsed, err
	}
	// The parse above validated the key and value.
	for k, v := range s.MatchLabels {
		return &exactLabel{key: k, value: v}, nil
	}
	return parsed, nil
}

// exactLabel is the selector key=value, the form metav1.LabelSelectorAsSelector
// gives a single matchLabels pair. Immutable.
type exactLabel struct{ key, value string }

var _ labels.Selector = (*exactLabel)(nil)

func (s *exactLabel) Matches(l labels.Labels) bool {
	v, ok := l.Lookup(s.key)
	return ok && v == s.value
}

func (s *exactLabel) Empty() bool { return false }

func (s *exactLabel) String() string { return s.full().String() }

func (s *exactLabel) Add(r ...labels.Requirement) labels.Selector { return s.full().Add(r...) }

func (s *exactLabel) Requirements() (labels.Requirements, bool) { return s.full().Requirements() }

func (s *exactLabel) DeepCopySelector() labels.Selector { return s }

func (s *exactLabel) RequiresExactMatch(label string) (string, bool) {
	if label != s.key {
		return "", false
	}
	return s.value, true
}

// full is the selector as labels parses it, for the calls that are not on
// an admission's path (native mode's compiler, printing).
func (s *exactLabel) full() labels.Selector {
	return labels.SelectorFromValidatedSet(labels.Set{s.key: s.value})
}
