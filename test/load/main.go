// Command load sends AdmissionReviews to a meshrole webhook (or any
// admission webhook) on this machine, over TLS and HTTP/2 as kube-apiserver
// does, and reports throughput, latency percentiles and the server's CPU time
// per admission. Every answer is validated; failures are counted and make the
// command exit 1.
//
//	go run ./test/load -url https://127.0.0.1:9443/mutate-v1-pod -ca bin/certs/ca.crt \
//	    -workers 4 -duration 10s -pid $(pgrep -n webhook)
//
// Load only ever goes to localhost or a loopback address, and is bounded by
// -requests and/or -duration.
package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/meshrole/meshrole/pkg/mutate"
	"github.com/meshrole/meshrole/test/load/loadgen"
)

func main() {
	os.Exit(run())
}

func run() int {
	var (
		opts      loadgen.Options
		caFile    string
		bodyFile  string
		namespace string
		jsonOut   bool
	)
	flag.StringVar(&opts.URL, "url", "https://127.0.0.1:9443"+mutate.Path, "Webhook URL (https, localhost or a loopback address only).")
	flag.StringVar(&caFile, "ca", "", "PEM file with the CA that signed the webhook's serving certificate (e.g. bin/certs/ca.crt).")
	flag.BoolVar(&opts.InsecureSkipVerify, "insecure", false, "Do not verify the server's certificate.")
	flag.StringVar(&opts.ServerName, "server-name", "", "TLS server name (default: the URL's host).")
	flag.BoolVar(&opts.HTTP1, "http1", false, "Speak HTTP/1.1, one connection per worker (what kube-apiserver uses for webhooks behind a Service), instead of HTTP/2.")
	flag.IntVar(&opts.Connections, "connections", 1, "Independent clients (connection pools) the workers are spread over; with HTTP/2, connections.")
	flag.BoolVar(&opts.DisableKeepAlives, "disable-keepalives", false, "Open a new connection (full TLS handshake) for every request.")
	flag.IntVar(&opts.Workers, "workers", 4, "Concurrent workers, each with one request in flight.")
	flag.IntVar(&opts.Requests, "requests", 0, "Stop after this many measured requests (0: no count bound).")
	flag.DurationVar(&opts.Duration, "duration", 10*time.Second, "Stop after this long (0: no time bound; -requests must then be set).")
	flag.DurationVar(&opts.Warmup, "warmup", time.Second, "Send load this long first without measuring it.")
	flag.DurationVar(&opts.Timeout, "timeout", 10*time.Second, "Per-request timeout.")
	flag.StringVar(&bodyFile, "body", "", "AdmissionReview JSON file to send (default: a typical ~6 KB eureka-server pod).")
	flag.StringVar(&namespace, "namespace", "default", "Namespace of the default review's pod.")
	flag.BoolVar(&opts.ExpectPatch, "expect-patch", false, "Count an answer without a JSON patch as a failure.")
	flag.IntVar(&opts.PID, "pid", 0, "Server process id: report its CPU time per request and its RSS (Linux /proc).")
	flag.BoolVar(&jsonOut, "json", false, "Print the result as JSON.")
	flag.Usage = func() {
		_, _ = fmt.Fprintf(flag.CommandLine.Output(), "usage: go run ./test/load [flags]\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		flag.Usage()
		return 2
	}

	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		opts.RootCAs = x509.NewCertPool()
		if !opts.RootCAs.AppendCertsFromPEM(pem) {
			fmt.Fprintf(os.Stderr, "%s holds no PEM certificate\n", caFile)
			return 2
		}
	}
	var err error
	if bodyFile != "" {
		opts.Body, err = os.ReadFile(bodyFile)
	} else {
		opts.Body, err = loadgen.TypicalReview(namespace)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := loadgen.Run(ctx, opts)
	if err != nil && !errors.Is(err, context.Canceled) {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	if jsonOut {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
	} else {
		fmt.Print(res)
	}
	if res.Errors > 0 || res.Requests == 0 {
		return 1
	}
	return 0
}
