package loadgen

import (
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Targets are several webhook URLs that Run spreads requests over,
// round-robin, as a Service spreads the API server's calls over the
// webhook's replicas. Remove takes one out while Run is running, as the
// endpoint of a terminating pod is removed: requests sent afterwards go to
// the others, requests already sent to it are not touched. Safe for
// concurrent use.
type Targets struct {
	mu   sync.Mutex
	urls []string
	next int
}

// NewTargets returns Targets over urls: at least one, no duplicates, each
// accepted by CheckURL.
func NewTargets(urls ...string) (*Targets, error) {
	if len(urls) == 0 {
		return nil, errors.New("loadgen: no target URL")
	}
	for i, u := range urls {
		if _, err := CheckURL(u); err != nil {
			return nil, err
		}
		if slices.Contains(urls[:i], u) {
			return nil, fmt.Errorf("loadgen: target URL %q listed twice", u)
		}
	}
	return &Targets{urls: slices.Clone(urls)}, nil
}

// URLs are the targets requests are sent to now.
func (t *Targets) URLs() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return slices.Clone(t.urls)
}

// Remove stops sending new requests to url. It refuses to remove the last
// target, or one it does not have.
func (t *Targets) Remove(url string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	i := slices.Index(t.urls, url)
	switch {
	case i < 0:
		return fmt.Errorf("loadgen: %q is not a target", url)
	case len(t.urls) == 1:
		return fmt.Errorf("loadgen: %q is the last target", url)
	}
	t.urls = slices.Delete(t.urls, i, i+1)
	return nil
}

// pick returns the URL for the next request.
func (t *Targets) pick() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.urls) == 0 {
		return ""
	}
	u := t.urls[t.next%len(t.urls)]
	t.next++
	return u
}

// targets returns opts' Targets, or Targets over opts.URL alone.
func (opts Options) targets() (*Targets, error) {
	if opts.Targets == nil {
		return NewTargets(opts.URL)
	}
	if opts.URL != "" {
		return nil, errors.New("loadgen: set URL or Targets, not both")
	}
	if len(opts.Targets.URLs()) == 0 {
		return nil, errors.New("loadgen: no target URL")
	}
	return opts.Targets, nil
}
