package rollout

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/meshrole/meshrole/pkg/policy"
)

// PlanOptions change what a plan restarts.
type PlanOptions struct {
	// IncludeBarePods restarts pods without a controller too. Nothing
	// recreates them: an evicted bare pod is gone.
	IncludeBarePods bool
}

// Plan is the order of a rollout: each owner's drifted pods, one at a time.
type Plan struct {
	Owners []OwnerPlan
	// Skipped are drifted pods the plan leaves alone, and why.
	Skipped []Skipped
}

// OwnerPlan is one owner's drifted pods in the order they are restarted:
// a StatefulSet's from the highest ordinal down, as its controller does;
// other owners' by name.
type OwnerPlan struct {
	Owner Owner
	Pods  []Target
}

// Skipped is a drifted pod a plan does not restart.
type Skipped struct {
	Target Target
	Why    string
}

// Len is how many pods the plan restarts.
func (p *Plan) Len() int {
	n := 0
	for _, o := range p.Owners {
		n += len(o.Pods)
	}
	return n
}

// NewPlan orders targets by owner (namespace, kind, name).
func NewPlan(targets []Target, opts PlanOptions) *Plan {
	plan := &Plan{}
	byOwner := map[Owner][]Target{}
	for _, t := range targets {
		if why := skipReason(t.Owner, opts); why != "" {
			plan.Skipped = append(plan.Skipped, Skipped{Target: t, Why: why})
			continue
		}
		byOwner[t.Owner] = append(byOwner[t.Owner], t)
	}
	for owner, pods := range byOwner {
		slices.SortFunc(pods, func(a, b Target) int {
			// Highest ordinal first; -1 (not a StatefulSet) ties, then names.
			return cmp.Or(cmp.Compare(b.Ordinal, a.Ordinal), strings.Compare(a.Name, b.Name))
		})
		plan.Owners = append(plan.Owners, OwnerPlan{Owner: owner, Pods: pods})
	}
	slices.SortFunc(plan.Owners, func(a, b OwnerPlan) int {
		return cmp.Or(strings.Compare(a.Owner.Namespace, b.Owner.Namespace),
			strings.Compare(a.Owner.Kind, b.Owner.Kind), strings.Compare(a.Owner.Name, b.Owner.Name))
	})
	slices.SortFunc(plan.Skipped, func(a, b Skipped) int { return strings.Compare(a.Target.Key(), b.Target.Key()) })
	return plan
}

func skipReason(owner Owner, opts PlanOptions) string {
	switch owner.Kind {
	case "":
		if opts.IncludeBarePods {
			return ""
		}
		return "no controller would recreate it (include bare pods to evict it anyway)"
	case "Job":
		return "a Job's pod runs to completion; the Job's next pod gets its verdict"
	case "Node":
		return "a static pod: its kubelet recreates it from a manifest, not through eviction"
	}
	return ""
}

// Write prints the plan: one line per pod, in order, with its drift, then
// the pods left alone.
func (p *Plan) Write(w io.Writer) error {
	var b strings.Builder
	if p.Len() == 0 {
		b.WriteString("no drifted pods to restart\n")
	}
	step := 0
	for _, o := range p.Owners {
		for _, t := range o.Pods {
			step++
			fmt.Fprintf(&b, "%d. evict %s (%s): %s\n", step, t.Key(), o.Owner, driftText(t.Drift))
		}
	}
	for _, s := range p.Skipped {
		fmt.Fprintf(&b, "skip %s (%s): %s; drift: %s\n", s.Target.Key(), s.Target.Owner, s.Why, driftText(s.Target.Drift))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// driftText is the reasons of drift, and what the first says.
func driftText(drift []policy.Drift) string {
	if len(drift) == 0 {
		return "no drift"
	}
	names := make([]string, len(drift))
	for i, d := range drift {
		names[i] = string(d.Reason)
	}
	return strings.Join(names, ", ") + " (" + drift[0].Detail + ")"
}
