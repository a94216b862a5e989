package install_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/meshrole/meshrole/pkg/policy/v1alpha1"
	"github.com/meshrole/meshrole/test/harness"
)

// cert-manager's module, whose CRDs (deploy/crds) are installed and whose
// controllers and CA injector run in-process.
const certManagerModule = "github.com/cert-manager/cert-manager"

// env is one control plane (kube-apiserver + etcd through envtest, and
// kube-controller-manager with the garbage collector and namespace
// controllers) shared by the tests of this package. It is started without
// meshrole's CRDs or webhook: the chart installs those.
type env struct {
	Root       string // repository root
	ChartDir   string // charts/meshrole
	K8sBin     string
	WebhookBin string

	testEnv *envtest.Environment
	// Config is the admin user's REST config (system:masters).
	Config *rest.Config
	// Kubeconfig is a kubeconfig file for Config.
	Kubeconfig string
	Scheme     *runtime.Scheme
	Client     client.Client
	Clientset  kubernetes.Interface
	kcm        *harness.Process

	// cert-manager's controllers and CA injector, once started.
	certManagerOnce sync.Once
	certManagerErr  error
	certManager     *certManager
}

var (
	sharedEnv     *env
	sharedEnvErr  error
	sharedEnvOnce sync.Once
)

// controlPlane returns the shared control plane, starting it on first use.
func controlPlane(t *testing.T) *env {
	t.Helper()
	sharedEnvOnce.Do(func() {
		start := time.Now()
		sharedEnv, sharedEnvErr = startEnv()
		if sharedEnvErr == nil {
			t.Logf("control plane up in %v (kube-apiserver, etcd, kube-controller-manager from %s)",
				time.Since(start).Round(time.Millisecond), sharedEnv.K8sBin)
		}
	})
	if sharedEnvErr != nil {
		t.Fatal(sharedEnvErr)
	}
	return sharedEnv
}

func startEnv() (e *env, err error) {
	e = &env{}
	defer func() {
		if err != nil {
			err = errors.Join(err, e.stop())
			sharedEnv = nil
		}
	}()
	if e.Root, err = harness.RepoRoot(); err != nil {
		return e, err
	}
	e.ChartDir = filepath.Join(e.Root, "charts", "meshrole")
	if e.K8sBin, err = harness.K8sBinDir(e.Root); err != nil {
		return e, err
	}
	if e.WebhookBin, err = harness.WebhookBinary(e.Root); err != nil {
		return e, err
	}
	if stale := harness.StaleSources(e.Root, e.WebhookBin); len(stale) > 0 {
		fmt.Fprintf(os.Stderr, "warning: %s is older than %s: run `make build`\n", e.WebhookBin, strings.Join(stale, ", "))
	}
	cmCRDs, err := certManagerCRDDir()
	if err != nil {
		return e, err
	}

	e.Scheme = runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, cmapi.AddToScheme, v1alpha1.AddToScheme,
	} {
		if err := add(e.Scheme); err != nil {
			return e, err
		}
	}
	e.testEnv = &envtest.Environment{
		BinaryAssetsDirectory: e.K8sBin,
		// cert-manager's CRDs only: meshrole's come from the chart's crds/.
		CRDDirectoryPaths:     []string{cmCRDs},
		ErrorIfCRDPathMissing: true,
		Scheme:                e.Scheme,
	}
	if e.Config, err = e.testEnv.Start(); err != nil {
		return e, fmt.Errorf("starting kube-apiserver + etcd from %s: %w", e.K8sBin, err)
	}
	if e.Client, err = client.New(e.Config, client.Options{Scheme: e.Scheme}); err != nil {
		return e, err
	}
	if e.Clientset, err = kubernetes.NewForConfig(e.Config); err != nil {
		return e, err
	}
	if e.Kubeconfig, err = writeKubeconfig("admin", e.Config, clientcmdapi.AuthInfo{
		ClientCertificateData: e.Config.CertData,
		ClientKeyData:         e.Config.KeyData,
	}); err != nil {
		return e, err
	}
	return e, e.startControllerManager()
}

// startControllerManager runs kube-controller-manager with the controllers
// that matter for an install without nodes: the garbage collector (objects
// owned by deleted ones, e.g. cert-manager's CertificateRequests) and the
// namespace controller (a deleted namespace is emptied and goes away). No
// deployment controller: nothing would run the webhook's pods anyway.
func (e *env) startControllerManager() error {
	kubeconfig, err := writeKubeconfig("kube-controller-manager", e.Config, clientcmdapi.AuthInfo{
		ClientCertificateData: e.Config.CertData,
		ClientKeyData:         e.Config.KeyData,
	})
	if err != nil {
		return err
	}
	e.kcm, err = harness.StartControllerManager(e.K8sBin, kubeconfig, filepath.Join(workDir, "kube-controller-manager.log"),
		"garbage-collector-controller", "namespace-controller", "clusterrole-aggregation-controller")
	return err
}

func (e *env) stop() error {
	var errs []error
	if e.certManager != nil {
		errs = append(errs, e.certManager.stop())
	}
	if e.kcm != nil {
		errs = append(errs, e.kcm.Stop())
	}
	if e.testEnv != nil {
		errs = append(errs, e.testEnv.Stop())
	}
	return errors.Join(errs...)
}

// writeKubeconfig writes a kubeconfig for the API server of cfg with the
// given credentials into the work directory and returns its path.
func writeKubeconfig(name string, cfg *rest.Config, auth clientcmdapi.AuthInfo) (string, error) {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos[name] = &auth
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: name}
	kc.CurrentContext = "envtest"
	path := filepath.Join(workDir, name+".kubeconfig")
	return path, clientcmd.WriteToFile(*kc, path)
}

// certManagerDir is where the Go toolchain keeps the cert-manager module this
// module requires (the version in go.mod).
func certManagerDir() (string, error) {
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", certManagerModule)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return "", fmt.Errorf("locating module %s (go list -m): %w", certManagerModule, err)
	}
	dir := strings.TrimSpace(string(out))
	if dir == "" {
		return "", fmt.Errorf("module %s is not in the module cache: run `go mod download` in test/install", certManagerModule)
	}
	return dir, nil
}

// certManagerCRDDir is cert-manager's deploy/crds: the controller-gen output
// its Helm chart's CRD templates are made from (same schemas; the chart only
// adds labels and a keep policy around them).
func certManagerCRDDir() (string, error) {
	dir, err := certManagerDir()
	if err != nil {
		return "", err
	}
	crds := filepath.Join(dir, "deploy", "crds")
	for _, f := range []string{"cert-manager.io_certificates.yaml", "cert-manager.io_issuers.yaml", "cert-manager.io_certificaterequests.yaml"} {
		if _, err := os.Stat(filepath.Join(crds, f)); err != nil {
			return "", fmt.Errorf("cert-manager CRD missing from %s: %w", crds, err)
		}
	}
	return crds, nil
}

// eventually polls cond every interval until it returns true, an error, or
// timeout passes; the last reason cond gave is in the error.
func eventually(ctx context.Context, timeout time.Duration, cond func() (done bool, reason string, err error)) error {
	deadline := time.Now().Add(timeout)
	var reason string
	for {
		done, r, err := cond()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		reason = r
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v: %s", timeout, reason)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %s)", ctx.Err(), reason)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
