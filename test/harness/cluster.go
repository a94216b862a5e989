package harness

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const (
	// KwokNodeAnnotation marks the nodes kwok simulates; kwok is started
	// with --manage-nodes-with-annotation-selector on it, so nodes without
	// it are left alone.
	KwokNodeAnnotation = "kwok.x-k8s.io/node"
	kwokNodeValue      = "fake"

	// NeverReadyLabel on a pod (value "true") makes kwok report it Running
	// but never Ready, like a container whose readiness probe keeps failing:
	// the harness's own stage wins over kwok's default pod-ready stage for
	// such pods. Put it on a pod template to get replacements that never
	// become Ready. Removing the label later changes nothing; to make such a
	// pod Ready, patch its status (no stage touches it again) or delete it.
	NeverReadyLabel = "harness.meshrole.io/never-ready"

	// kwokStagesFile is written by test/controlplane/build.sh next to the
	// kwok binary: kwok's default node and pod stages.
	kwokStagesFile = "kwok-stages.yaml"
)

// ClusterControllers are the kube-controller-manager controllers that pods
// running on kwok's nodes need on top of the harness's workload controllers
// (deployment-, replicaset-, statefulset-, garbage-collector-controller):
// the disruption controller computes PodDisruptionBudget status, which the
// Eviction API reads; without it every eviction covered by a budget is
// refused with 429.
var ClusterControllers = []string{"disruption-controller"}

// ClusterOptions configure StartCluster.
type ClusterOptions struct {
	// Config and Kubeconfig reach the API server as a system:masters user;
	// kube-scheduler and kwok run with Kubeconfig.
	Config     *rest.Config
	Kubeconfig string
	// K8sBin holds kube-scheduler, kwok and kwok-stages.yaml (make testenv).
	K8sBin string
	// WorkDir receives the logs and kwok's configuration.
	WorkDir string
	// Nodes is how many fake nodes to create: kwok-node-0, kwok-node-1, ...;
	// 1 when zero.
	Nodes int
}

// Cluster is a scheduler and a node simulator running next to a harness's
// control plane: pods get scheduled onto fake nodes and kwok moves them to
// Running and Ready (see NeverReadyLabel), and deletes them when they are
// deleted, as a kubelet would.
type Cluster struct {
	Scheduler *Process
	Kwok      *Process
	// Nodes are the names of the fake nodes, all Ready.
	Nodes []string
}

// StartCluster starts the harness's kube-scheduler and kwok and creates
// nodes fake nodes (1 when nodes is 0); see StartCluster.
func (h *Harness) StartCluster(ctx context.Context, nodes int) (*Cluster, error) {
	return StartCluster(ctx, ClusterOptions{
		Config:     h.Config,
		Kubeconfig: h.Kubeconfig,
		K8sBin:     h.K8sBin,
		WorkDir:    h.WorkDir,
		Nodes:      nodes,
	})
}

// StartCluster starts kube-scheduler and kwok against a running API server,
// creates the fake nodes and returns once kwok reports every one of them
// Ready and they are schedulable. Pods then run only as far as the controller manager lets them: PDB
// status and evictions need ClusterControllers. On error, whatever was
// started is stopped again. Stop it before the control plane.
func StartCluster(ctx context.Context, opts ClusterOptions) (c *Cluster, err error) {
	if opts.Config == nil || opts.Kubeconfig == "" || opts.K8sBin == "" || opts.WorkDir == "" {
		return nil, errors.New("harness: StartCluster needs Config, Kubeconfig, K8sBin and WorkDir")
	}
	if opts.Nodes <= 0 {
		opts.Nodes = 1
	}
	var missing []string
	for _, name := range []string{"kube-scheduler", "kwok"} {
		if !isExecutable(filepath.Join(opts.K8sBin, name)) {
			missing = append(missing, name)
		}
	}
	if _, err := os.Stat(filepath.Join(opts.K8sBin, kwokStagesFile)); err != nil {
		missing = append(missing, kwokStagesFile)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s missing from %s; run `make testenv`", strings.Join(missing, ", "), opts.K8sBin)
	}
	cs, err := kubernetes.NewForConfig(opts.Config)
	if err != nil {
		return nil, err
	}
	ownStages := filepath.Join(opts.WorkDir, "kwok-harness-stages.yaml")
	if err := os.WriteFile(ownStages, []byte(neverReadyStage), 0o644); err != nil {
		return nil, err
	}

	c = &Cluster{}
	defer func() {
		if err != nil {
			if stopErr := c.Stop(); stopErr != nil {
				err = fmt.Errorf("%w (and stopping: %w)", err, stopErr)
			}
		}
	}()

	c.Scheduler = &Process{
		Name:    "kube-scheduler",
		Path:    filepath.Join(opts.K8sBin, "kube-scheduler"),
		LogPath: filepath.Join(opts.WorkDir, "kube-scheduler.log"),
		Args: []string{
			"--kubeconfig=" + opts.Kubeconfig,
			"--leader-elect=false",
			"--secure-port=0",
		},
	}
	c.Kwok = &Process{
		Name:    "kwok",
		Path:    filepath.Join(opts.K8sBin, "kwok"),
		LogPath: filepath.Join(opts.WorkDir, "kwok.log"),
		Args: []string{
			"--kubeconfig=" + opts.Kubeconfig,
			// Without --enable-crds=Stage, kwok plays only the stages of its
			// --config files: kwok's defaults, then the harness's own.
			"--config=" + filepath.Join(opts.K8sBin, kwokStagesFile),
			"--config=" + ownStages,
			"--manage-all-nodes=false",
			"--manage-nodes-with-annotation-selector=" + KwokNodeAnnotation + "=" + kwokNodeValue,
			"--node-lease-duration-seconds=40",
		},
	}
	for _, p := range []*Process{c.Scheduler, c.Kwok} {
		if err := p.Start(); err != nil {
			return c, err
		}
	}

	// The nodes report the control plane's version as their kubelet's, as
	// in a cluster upgraded as a whole: Istio's injector decides from it
	// whether istio-proxy runs as a native sidecar (kubelets >= 1.33).
	version, err := cs.Discovery().ServerVersion()
	if err != nil {
		return c, fmt.Errorf("reading the API server's version for the nodes' kubelet version: %w", err)
	}
	for i := range opts.Nodes {
		node := kwokNode(fmt.Sprintf("kwok-node-%d", i), version.GitVersion)
		if _, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{FieldManager: fieldOwner}); err != nil {
			return c, fmt.Errorf("creating node %s: %w", node.Name, err)
		}
		c.Nodes = append(c.Nodes, node.Name)
	}
	if err := c.waitForNodes(ctx, cs, 60*time.Second); err != nil {
		return c, err
	}
	return c, nil
}

// kwokNode is a node as kwokctl creates them (kustomize/kwokctl/resource/
// node.yaml), but without the kwok.x-k8s.io/node=fake:NoSchedule taint
// kwok's docs put on nodes in a real cluster: here every node is fake, and
// the taint would make every test pod need a toleration. It reports the
// given kubelet version; kwok keeps it (it says "kwok-<version>" for nodes
// that report none).
func kwokNode(name, kubeletVersion string) *corev1.Node {
	resources := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("32"),
		corev1.ResourceMemory: resource.MustParse("256Gi"),
		corev1.ResourcePods:   resource.MustParse("110"),
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: name,
			Annotations: map[string]string{
				KwokNodeAnnotation:             kwokNodeValue,
				"node.alpha.kubernetes.io/ttl": "0",
			},
			Labels: map[string]string{
				corev1.LabelArchStable:          "amd64",
				corev1.LabelOSStable:            "linux",
				corev1.LabelHostname:            name,
				"kubernetes.io/role":            "agent",
				"node-role.kubernetes.io/agent": "",
				"type":                          "kwok",
			},
		},
		// Capacity is set at creation so the scheduler can place pods
		// before kwok has initialized the node.
		Status: corev1.NodeStatus{
			Allocatable: resources,
			Capacity:    resources,
			NodeInfo:    corev1.NodeSystemInfo{Architecture: "amd64", OperatingSystem: "linux", KubeletVersion: kubeletVersion},
		},
	}
}

// waitForNodes waits for kwok to report the nodes Ready, and then does
// what the node lifecycle controller, which the harness does not run, would
// do: remove the node.kubernetes.io/not-ready:NoSchedule taint the API
// server put on them at creation (TaintNodesByCondition).
func (c *Cluster) waitForNodes(ctx context.Context, cs kubernetes.Interface, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var notReady []string
	for {
		notReady = notReady[:0]
		for _, name := range c.Nodes {
			node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err == nil && nodeReady(node) {
				err = untaintNotReady(ctx, cs, node)
				if err == nil {
					continue
				}
			}
			notReady = append(notReady, name)
		}
		if len(notReady) == 0 {
			return nil
		}
		for _, p := range []*Process{c.Scheduler, c.Kwok} {
			if !p.Running() {
				return fmt.Errorf("%s exited (%s):\n%s", p.Name, p.ExitStatus(), p.LogTail(30))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nodes %s not Ready and schedulable within %v; kwok log (%s):\n%s",
				strings.Join(notReady, ", "), timeout, c.Kwok.LogPath, c.Kwok.LogTail(30))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func untaintNotReady(ctx context.Context, cs kubernetes.Interface, node *corev1.Node) error {
	isNotReady := func(t corev1.Taint) bool { return t.Key == corev1.TaintNodeNotReady }
	if !slices.ContainsFunc(node.Spec.Taints, isNotReady) {
		return nil
	}
	// A merge patch replaces the whole list, without a resourceVersion:
	// kwok keeps patching the node's status meanwhile.
	patch, err := json.Marshal(map[string]any{"spec": map[string]any{"taints": slices.DeleteFunc(slices.Clone(node.Spec.Taints), isNotReady)}})
	if err != nil {
		return err
	}
	_, err = cs.CoreV1().Nodes().Patch(ctx, node.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: fieldOwner})
	return err
}

func nodeReady(node *corev1.Node) bool {
	return slices.ContainsFunc(node.Status.Conditions, func(c corev1.NodeCondition) bool {
		return c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue
	})
}

// Stop stops kwok and the scheduler. The nodes stay: they go with the
// control plane.
func (c *Cluster) Stop() error {
	var errs []error
	for _, p := range []*Process{c.Kwok, c.Scheduler} {
		if p != nil {
			errs = append(errs, p.Stop())
		}
	}
	return errors.Join(errs...)
}

// Diagnostics returns the tails of the scheduler's and kwok's logs.
func (c *Cluster) Diagnostics(lines int) string {
	var b strings.Builder
	for _, p := range []*Process{c.Scheduler, c.Kwok} {
		if p != nil {
			fmt.Fprintf(&b, "--- %s log (last %d lines of %s)\n%s\n", p.Name, lines, p.LogPath, p.LogTail(lines))
		}
	}
	return b.String()
}

// neverReadyStage takes pods labelled NeverReadyLabel=true to Running with
// their containers running but not ready. kwok picks among the stages that
// match a pod by weight, and its default stages weigh 0: this one, weight
// 1, always wins over pod-ready. Deletion is still kwok's pod-delete stage.
const neverReadyStage = `apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: harness-pod-never-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  weight: 1
  selector:
    matchLabels:
      ` + NeverReadyLabel + `: "true"
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values:
      - 'Pending'
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: PodScheduled
      - lastTransitionTime: {{ $now | Quote }}
        reason: ContainersNotReady
        status: "False"
        type: Ready
      - lastTransitionTime: {{ $now | Quote }}
        reason: ContainersNotReady
        status: "False"
        type: ContainersReady
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: false
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
      {{ $podIPs := PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
      {{ with $podIPs }}
      podIP: {{ index . 0 | Quote }}
      podIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
      phase: Running
      startTime: {{ $now | Quote }}
`
