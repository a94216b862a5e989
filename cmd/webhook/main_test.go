package main

import (
	"flag"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/meshrole/meshrole/pkg/rollout"
)

// TestOptionsAreValidatedBeforeAnyClusterAccess: a mistyped flag is reported
// as itself; parseOptions touches no cluster, so these run with none.
func TestOptionsAreValidatedBeforeAnyClusterAccess(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
	}{
		{nil, ""},
		{[]string{"--mode=native", "--native-failure-policy=Ignore"}, ""},
		{[]string{"--mode=natvie"}, `--mode="natvie": want webhook or native`},
		{[]string{"--mode=native", "--native-failure-policy=Sometimes"}, `--native-failure-policy="Sometimes": want Fail or Ignore`},
		{[]string{"--webhook-port=0"}, "--webhook-port=0: want a port in 1-65535"},
		{[]string{"--shutdown-delay=-1s"}, "--shutdown-delay=-1s: want zero or more"},
		{[]string{"--mode=x", "--shutdown-delay=-1s"}, `--mode="x"`},
		{[]string{"--automatic-rollout-timeout=0s"}, "--automatic-rollout-timeout=0s: want more than zero (or --automatic-rollout=false)"},
		{[]string{"--automatic-rollout=false", "--automatic-rollout-timeout=0s"}, ""},
		{[]string{"--mode=native", "--automatic-rollout-timeout=90s"}, ""},
		{[]string{"--automatic-rollout=maybe"}, `invalid boolean value "maybe" for -automatic-rollout`},
		{[]string{"--no-such-flag"}, "flag provided but not defined: -no-such-flag"},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("webhook", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		opts, err := parseOptions(fs, tt.args)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%v: %v", tt.args, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%v: error %v, want one containing %q", tt.args, err, tt.wantErr)
		}
		if tt.wantErr == "" && (len(opts.ExcludedNamespaces) == 0 || opts.ExcludedNamespaces[0] != "kube-system") {
			t.Errorf("%v: excluded namespaces %v, want kube-system first by default", tt.args, opts.ExcludedNamespaces)
		}
	}
}

// TestAutomaticRolloutIsOnUnlessTurnedOff: the policy's spec.rollout is the
// opt-in; the flag is the operator's veto over every policy.
func TestAutomaticRolloutIsOnUnlessTurnedOff(t *testing.T) {
	for _, tt := range []struct {
		args        []string
		wantOn      bool
		wantTimeout time.Duration
	}{
		{nil, true, rollout.DefaultTimeout},
		{[]string{"--mode=native"}, true, rollout.DefaultTimeout},
		{[]string{"--automatic-rollout-timeout=90s"}, true, 90 * time.Second},
		{[]string{"--automatic-rollout=false"}, false, rollout.DefaultTimeout},
	} {
		fs := flag.NewFlagSet("webhook", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		opts, err := parseOptions(fs, tt.args)
		if err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		if opts.AutomaticRollout != tt.wantOn || opts.AutomaticRolloutTimeout != tt.wantTimeout {
			t.Errorf("%v: automatic rollout %v, timeout %v; want %v, %v", tt.args, opts.AutomaticRollout, opts.AutomaticRolloutTimeout, tt.wantOn, tt.wantTimeout)
		}
	}
}

// TestSuggestEventsAreOffUnlessAskedFor: the publisher caches every workload,
// Service and ConfigMap of the cluster, so it runs only when asked for.
func TestSuggestEventsAreOffUnlessAskedFor(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want bool
	}{
		{nil, false},
		{[]string{"--mode=native"}, false},
		{[]string{"--suggest-events"}, true},
		{[]string{"--mode=native", "--suggest-events=true"}, true},
	} {
		fs := flag.NewFlagSet("webhook", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		opts, err := parseOptions(fs, tt.args)
		if err != nil {
			t.Fatalf("%v: %v", tt.args, err)
		}
		if opts.SuggestEvents != tt.want {
			t.Errorf("%v: suggest events %v, want %v", tt.args, opts.SuggestEvents, tt.want)
		}
	}
}
