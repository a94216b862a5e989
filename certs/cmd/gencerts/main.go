// Command gencerts writes a throw-away CA (ca.crt) and a serving certificate
// (tls.crt, tls.key) signed by it into a directory, for running the meshrole
// webhook locally (`make certs`):
//
//	go run ./certs/cmd/gencerts -dir bin/certs -host localhost -host 127.0.0.1
//
// Point the webhook's --cert-dir at the directory and put ca.crt (base64) in
// the webhook configuration's caBundle.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshrole/meshrole/certs"
)

type hostList []string

func (h *hostList) String() string { return strings.Join(*h, ",") }

func (h *hostList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*h = append(*h, s)
		}
	}
	return nil
}

func main() {
	var hosts hostList
	dir := flag.String("dir", "bin/certs", "directory to write ca.crt, tls.crt and tls.key into")
	validity := flag.Duration("validity", certs.DefaultValidity, "validity of the CA and the serving certificate")
	flag.Var(&hosts, "host", "DNS name or IP address of the serving certificate (repeatable, or comma-separated; default localhost,127.0.0.1)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "gencerts: unexpected arguments: %v\n", flag.Args())
		os.Exit(2)
	}
	if len(hosts) == 0 {
		hosts = hostList{"localhost", "127.0.0.1"}
	}
	b, err := certs.WriteDir(*dir, certs.Options{Hosts: hosts, Validity: *validity})
	if err != nil {
		fmt.Fprintf(os.Stderr, "gencerts: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("wrote %s, %s, %s to %s (hosts %s, valid until %s)\n",
		certs.CAFile, certs.CertFile, certs.KeyFile, filepath.Clean(*dir),
		hosts.String(), b.Cert.NotAfter.UTC().Format(time.RFC3339))
}
