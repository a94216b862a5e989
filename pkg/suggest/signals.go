package suggest

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/meshrole/meshrole/pkg/policy"
)

// objects indexes the Services and ConfigMaps of an Inventory.
type objects struct {
	services   map[string][]*corev1.Service // by namespace
	configMaps map[string]*corev1.ConfigMap // by namespace/name
}

func index(inv *Inventory) *objects {
	o := &objects{services: map[string][]*corev1.Service{}, configMaps: map[string]*corev1.ConfigMap{}}
	for i := range inv.Services {
		s := &inv.Services[i]
		o.services[s.Namespace] = append(o.services[s.Namespace], s)
	}
	for i := range inv.ConfigMaps {
		c := &inv.ConfigMaps[i]
		o.configMaps[c.Namespace+"/"+c.Name] = c
	}
	return o
}

// selecting returns the Services whose selector picks w's pods.
func (o *objects) selecting(w *workload) []*corev1.Service {
	var out []*corev1.Service
	for _, s := range o.services[w.ref.Namespace] {
		// A Service without a selector has hand-made endpoints: not evidence.
		if len(s.Spec.Selector) > 0 && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(w.labels)) {
			out = append(out, s)
		}
	}
	return out
}

func headless(s *corev1.Service) bool { return s.Spec.ClusterIP == corev1.ClusterIPNone }

// declaredPort is a port a workload's pods listen on.
type declaredPort struct {
	number int32
	name   string
	where  string
}

// ports are the container ports of w's own containers and the numeric
// target ports of the Services selecting it.
func ports(w *workload, services []*corev1.Service) []declaredPort {
	var out []declaredPort
	for _, c := range w.spec.Containers {
		if c.Name == policy.IstioProxyContainer {
			continue
		}
		for _, p := range c.Ports {
			if p.Protocol == corev1.ProtocolUDP {
				continue
			}
			out = append(out, declaredPort{p.ContainerPort, p.Name, fmt.Sprintf("container %s port %s", c.Name, portLabel(p.Name, p.ContainerPort))})
		}
	}
	for _, s := range services {
		for _, p := range s.Spec.Ports {
			if p.Protocol == corev1.ProtocolUDP {
				continue
			}
			n := p.Port
			if p.TargetPort.IntVal != 0 {
				n = p.TargetPort.IntVal
			} else if p.TargetPort.StrVal != "" {
				continue // a named target is a container port, listed above
			}
			out = append(out, declaredPort{n, p.Name, fmt.Sprintf("Service %s port %s", s.Name, portLabel(p.Name, n))})
		}
	}
	return out
}

func portLabel(name string, n int32) string {
	if name == "" {
		return fmt.Sprint(n)
	}
	return fmt.Sprintf("%s (%d)", name, n)
}

// text is one piece of a workload's configuration.
type text struct {
	source string
	// name is an env variable's name or a ConfigMap key; value its value.
	name, value string
}

// texts are the configuration a workload's containers carry: command, args,
// env (with ConfigMap references resolved), envFrom ConfigMaps and mounted
// ConfigMaps. Secrets are not read.
func (o *objects) texts(w *workload) []text {
	var out []text
	ns := w.ref.Namespace
	configMap := func(name string) *corev1.ConfigMap { return o.configMaps[ns+"/"+name] }
	fromConfigMap := func(cm *corev1.ConfigMap, how string) {
		for _, k := range sortedKeys(cm.Data) {
			out = append(out, text{fmt.Sprintf("ConfigMap %s/%s key %s (%s)", ns, cm.Name, k, how), k, cm.Data[k]})
		}
	}
	for _, c := range slices.Concat(w.spec.InitContainers, w.spec.Containers) {
		if c.Name == policy.IstioProxyContainer {
			continue
		}
		for i, s := range slices.Concat(c.Command, c.Args) {
			out = append(out, text{fmt.Sprintf("command line of container %s (item %d)", c.Name, i+1), "", s})
		}
		for _, e := range c.Env {
			source := fmt.Sprintf("env %s of container %s", e.Name, c.Name)
			value := e.Value
			if ref := e.ValueFrom; ref != nil && ref.ConfigMapKeyRef != nil {
				if cm := configMap(ref.ConfigMapKeyRef.Name); cm != nil {
					value = cm.Data[ref.ConfigMapKeyRef.Key]
					source += fmt.Sprintf(" (ConfigMap %s/%s key %s)", ns, cm.Name, ref.ConfigMapKeyRef.Key)
				}
			}
			out = append(out, text{source, e.Name, value})
		}
		for _, e := range c.EnvFrom {
			if e.ConfigMapRef == nil {
				continue
			}
			if cm := configMap(e.ConfigMapRef.Name); cm != nil {
				fromConfigMap(cm, "envFrom of container "+c.Name)
			}
		}
	}
	for _, v := range w.spec.Volumes {
		var names []string
		if v.ConfigMap != nil {
			names = append(names, v.ConfigMap.Name)
		}
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if s.ConfigMap != nil {
					names = append(names, s.ConfigMap.Name)
				}
			}
		}
		for _, name := range names {
			if cm := configMap(name); cm != nil {
				fromConfigMap(cm, "volume "+v.Name)
			}
		}
	}
	return out
}

// nonServerWords mark images of tools around a system, not its members.
var nonServerWords = []string{"exporter", "operator", "ui", "rest", "connect", "client", "cli", "proxy", "backup", "manager", "dashboard"}

// repository is an image reference without registry, tag and digest:
// "docker.io/bitnami/kafka:3.9@sha256:..." is "bitnami/kafka".
func repository(image string) string {
	image, _, _ = strings.Cut(image, "@")
	if slash := strings.LastIndex(image, "/"); strings.LastIndex(image, ":") > slash {
		image = image[:strings.LastIndex(image, ":")]
	}
	if first, rest, ok := strings.Cut(image, "/"); ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		image = rest
	}
	return strings.TrimPrefix(strings.ToLower(image), "library/")
}

// imageMatches reports whether an image matches a hint: the hint is the
// repository path or its end, the last path element, or a run of whole words
// of it ("cp-zookeeper" matches "zookeeper", "zookeeper-exporter" nothing).
func imageMatches(image, hint string) bool {
	repo := repository(image)
	last := repo[strings.LastIndex(repo, "/")+1:]
	words := strings.FieldsFunc(last, func(r rune) bool { return r == '-' || r == '_' || r == '.' })
	for _, w := range words {
		if slices.Contains(nonServerWords, w) {
			return false
		}
	}
	if strings.Contains(hint, "/") {
		return repo == hint || strings.HasSuffix(repo, "/"+hint)
	}
	if last == hint {
		return true
	}
	want := strings.Split(hint, "-")
	for i := 0; i+len(want) <= len(words); i++ {
		if slices.Equal(words[i:i+len(want)], want) {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
