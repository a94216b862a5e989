package install_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	cmscheme "github.com/cert-manager/cert-manager/pkg/client/clientset/versioned/scheme"
	controllerpkg "github.com/cert-manager/cert-manager/pkg/controller"
	"github.com/cert-manager/cert-manager/pkg/controller/cainjector"
	crapprover "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	crca "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	crselfsigned "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	"github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	"github.com/cert-manager/cert-manager/pkg/controller/issuers"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"         // the CA issuer type, for the issuers controller
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned" // the SelfSigned issuer type
	"github.com/cert-manager/cert-manager/pkg/util"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	apiregistrationv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// certManagerControllers are the cert-manager controllers (by their
// registered names) that take the chart's chain from Issuer to Secret:
// SelfSigned Issuer -> CA Certificate -> CA Issuer -> serving Certificate.
// They are the certificate controllers of cert-manager's default set plus
// the issuers controller and the CertificateRequest approver and signers of
// the two issuer types the chart uses; ACME, Vault, Venafi, ClusterIssuers
// and the ingress/gateway shims are left out (nothing here uses them).
var certManagerControllers = []string{
	issuers.ControllerName,
	crapprover.ControllerName,
	crselfsigned.CRControllerName,
	crca.CRControllerName,
	trigger.ControllerName,
	keymanager.ControllerName,
	requestmanager.ControllerName,
	issuing.ControllerName,
	readiness.ControllerName,
	revisionmanager.ControllerName,
}

// certManager is cert-manager running in the test process against the
// shared API server: its real certificate controllers (as cert-manager's
// controller binary wires them, from pkg/controller's registry) and its
// real CA injector (pkg/controller/cainjector, wired as cmd/cainjector does).
type certManager struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	stopFn []func()

	mu   sync.Mutex
	errs []error
}

// certManagerFor starts cert-manager on the shared control plane on first
// use.
func (e *env) certManagerFor(t *testing.T) *certManager {
	t.Helper()
	e.certManagerOnce.Do(func() {
		start := time.Now()
		e.certManager, e.certManagerErr = startCertManager(e)
		if e.certManagerErr == nil {
			t.Logf("cert-manager v1.21.2 in-process: controllers %v and the CA injector, started in %v",
				certManagerControllers, time.Since(start).Round(time.Millisecond))
		}
	})
	if e.certManagerErr != nil {
		t.Fatal(e.certManagerErr)
	}
	if err := e.certManager.err(); err != nil {
		t.Fatalf("cert-manager: %v", err)
	}
	return e.certManager
}

func (cm *certManager) fail(err error) {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	cm.errs = append(cm.errs, err)
}

// err reports a controller or the CA injector that stopped with an error.
func (cm *certManager) err() error {
	cm.mu.Lock()
	defer cm.mu.Unlock()
	return errors.Join(cm.errs...)
}

func (cm *certManager) stop() error {
	cm.cancel()
	done := make(chan struct{})
	go func() {
		cm.wg.Wait()
		for _, f := range cm.stopFn {
			f()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cm.fail(errors.New("cert-manager's controllers did not stop within 30s"))
	}
	return cm.err()
}

func startCertManager(e *env) (cm *certManager, err error) {
	ctx, cancel := context.WithCancel(context.Background())
	cm = &certManager{cancel: cancel}
	defer func() {
		if err != nil {
			err = errors.Join(err, cm.stop())
		}
	}()

	// The controllers, as cert-manager's controller binary runs them: a
	// ContextFactory from a kubeconfig, each enabled controller built from
	// the registry and run with 5 workers, then the shared informer factories
	// started.
	kubeconfig, err := writeKubeconfig("cert-manager", e.Config, clientcmdapi.AuthInfo{
		ClientCertificateData: e.Config.CertData,
		ClientKeyData:         e.Config.KeyData,
	})
	if err != nil {
		return cm, err
	}
	factory, err := controllerpkg.NewContextFactory(ctx, controllerpkg.ContextOptions{
		Kubeconfig:         kubeconfig,
		KubernetesAPIQPS:   20, // cert-manager's defaults
		KubernetesAPIBurst: 50,
		IssuerOptions:      controllerpkg.IssuerOptions{ClusterResourceNamespace: "kube-system"},
		CertificateOptions: controllerpkg.CertificateOptions{
			CopiedAnnotationPrefixes:                 []string{"*", "-kubectl.kubernetes.io/", "-fluxcd.io/", "-argocd.argoproj.io/"},
			CertificateRequestMinimumBackoffDuration: time.Hour,
			CertificateRequestMaximumBackoffDuration: 32 * time.Hour,
		},
	})
	if err != nil {
		return cm, fmt.Errorf("cert-manager controller context: %w", err)
	}
	known := controllerpkg.Known()
	for _, name := range certManagerControllers {
		construct, ok := known[name]
		if !ok {
			return cm, fmt.Errorf("cert-manager controller %q is not registered", name)
		}
		c, err := construct(factory)
		if err != nil {
			return cm, fmt.Errorf("cert-manager controller %s: %w", name, err)
		}
		cm.wg.Go(func() {
			if err := c.Run(5, ctx); err != nil {
				cm.fail(fmt.Errorf("controller %s: %w", name, err))
			}
		})
	}
	shared, err := factory.Build()
	if err != nil {
		return cm, err
	}
	shared.KubeSharedInformerFactory.Start(ctx.Done())
	shared.SharedInformerFactory.Start(ctx.Done())
	shared.HTTP01ResourceMetadataInformersFactory.Start(ctx.Done())
	cm.stopFn = append(cm.stopFn,
		shared.KubeSharedInformerFactory.Shutdown,
		shared.SharedInformerFactory.Shutdown,
		shared.HTTP01ResourceMetadataInformersFactory.Shutdown)

	// The CA injector, as cmd/cainjector's Run sets up its manager: its own
	// scheme, Secrets never cached (read from the API server on each
	// reconcile), every injectable kind enabled, the Certificate data source
	// on (what cert-manager.io/inject-ca-from needs).
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme, cmscheme.AddToScheme, apiextensionsv1.AddToScheme, apiregistrationv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			return cm, err
		}
	}
	mgr, err := ctrl.NewManager(util.RestConfigWithUserAgent(e.Config, "cainjector"), ctrl.Options{
		Scheme:  scheme,
		Cache:   cache.Options{ReaderFailOnMissingInformer: true},
		Client:  client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}},
		Metrics: metricsserver.Options{BindAddress: "0"},
	})
	if err != nil {
		return cm, fmt.Errorf("cainjector manager: %w", err)
	}
	if err := cainjector.RegisterAllInjectors(ctx, mgr, cainjector.SetupOptions{
		EnableCertificatesDataSource: true,
		EnabledReconcilersFor: map[string]bool{
			cainjector.MutatingWebhookConfigurationName:   true,
			cainjector.ValidatingWebhookConfigurationName: true,
			cainjector.APIServiceName:                     true,
			cainjector.CustomResourceDefinitionName:       true,
		},
	}); err != nil {
		return cm, fmt.Errorf("registering cainjector's injectors: %w", err)
	}
	cm.wg.Go(func() {
		if err := mgr.Start(ctx); err != nil {
			cm.fail(fmt.Errorf("cainjector: %w", err))
		}
	})
	return cm, nil
}
