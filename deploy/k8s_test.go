package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/kontextq/kontextq/worker"
)

// scaledObject is the part of KEDA's ScaledObject (keda.sh/v1alpha1) the overlay uses, as KEDA's
// CRD defines it. KEDA's Go module is far too large to import for one type.
type scaledObject struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace"`
		Labels    map[string]string `json:"labels"`
	} `json:"metadata"`
	Spec struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		PollingInterval int32 `json:"pollingInterval"`
		CooldownPeriod  int32 `json:"cooldownPeriod"`
		MinReplicaCount int32 `json:"minReplicaCount"`
		MaxReplicaCount int32 `json:"maxReplicaCount"`
		Triggers        []struct {
			Type     string            `json:"type"`
			Name     string            `json:"name"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

// built is one kustomize build, decoded.
type built struct {
	deployments map[string]*appsv1.Deployment
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	pvcs        map[string]*corev1.PersistentVolumeClaim
	pdbs        map[string]*policyv1.PodDisruptionBudget
	scaled      map[string]*scaledObject
	namespaces  map[string]bool
}

// kustomize builds dir with kubectl and decodes every object strictly into its Kubernetes type:
// an unknown or misspelt field, a duplicate key or a kind nobody expects fails the test.
func kustomize(t *testing.T, dir string) built {
	t.Helper()
	kubectl := tool(t, "kubectl", "this machine kind's image ships it; Debian has no package for it")
	cmd := exec.Command(kubectl, "kustomize", dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr.String())
	}
	b := built{
		deployments: map[string]*appsv1.Deployment{}, services: map[string]*corev1.Service{},
		configMaps: map[string]*corev1.ConfigMap{}, pvcs: map[string]*corev1.PersistentVolumeClaim{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{}, scaled: map[string]*scaledObject{}, namespaces: map[string]bool{},
	}
	for i, doc := range bytes.Split(out, []byte("\n---\n")) {
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		js, err := yaml.YAMLToJSONStrict(doc)
		if err != nil {
			t.Fatalf("%s: object %d: %v", dir, i+1, err)
		}
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		if err := json.Unmarshal(js, &head); err != nil {
			t.Fatalf("%s: object %d: %v", dir, i+1, err)
		}
		where := fmt.Sprintf("%s: %s %s", dir, head.Kind, head.Metadata.Name)
		var obj any
		switch head.APIVersion + " " + head.Kind {
		case "apps/v1 Deployment":
			o := &appsv1.Deployment{}
			b.deployments[head.Metadata.Name], obj = o, o
		case "v1 Service":
			o := &corev1.Service{}
			b.services[head.Metadata.Name], obj = o, o
		case "v1 ConfigMap":
			o := &corev1.ConfigMap{}
			b.configMaps[head.Metadata.Name], obj = o, o
		case "v1 PersistentVolumeClaim":
			o := &corev1.PersistentVolumeClaim{}
			b.pvcs[head.Metadata.Name], obj = o, o
		case "policy/v1 PodDisruptionBudget":
			o := &policyv1.PodDisruptionBudget{}
			b.pdbs[head.Metadata.Name], obj = o, o
		case "keda.sh/v1alpha1 ScaledObject":
			o := &scaledObject{}
			b.scaled[head.Metadata.Name], obj = o, o
		case "v1 Secret":
			t.Fatalf("%s: a Secret is committed; secrets are created by the operator (see k8s/README.md)", where)
		default:
			t.Fatalf("%s: unexpected %s %s", where, head.APIVersion, head.Kind)
		}
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.DisallowUnknownFields()
		if err := dec.Decode(obj); err != nil {
			t.Fatalf("%s: %v", where, err)
		}
		b.namespaces[head.Metadata.Namespace] = true
	}
	return b
}

// The Kubernetes base builds, every object is what Kubernetes accepts field for field, and the
// objects fit together: what refers to another by name or label finds it, workers stop within
// their grace period and are probed where they answer, and no secret value is committed.
func TestKubernetesBase(t *testing.T) {
	b := kustomize(t, "k8s")
	if len(b.namespaces) != 1 || b.namespaces[""] {
		t.Errorf("objects in namespaces %v; want all in one named namespace", b.namespaces)
	}
	checkKubernetes(t, "k8s", b)
	if len(b.scaled) != 0 {
		t.Errorf("the base scales workers with KEDA; that is the overlay's")
	}
}

func TestKubernetesKEDAOverlay(t *testing.T) {
	b := kustomize(t, "k8s/overlays/keda")
	if len(b.namespaces) != 1 || b.namespaces[""] {
		t.Errorf("objects in namespaces %v; want all in one named namespace", b.namespaces)
	}
	checkKubernetes(t, "k8s/overlays/keda", b)
	so := b.scaled["kontextq-worker"]
	if so == nil {
		t.Fatal("no ScaledObject kontextq-worker")
	}
	if b.deployments[so.Spec.ScaleTargetRef.Name] == nil {
		t.Errorf("ScaledObject scales %q, which is not a Deployment here", so.Spec.ScaleTargetRef.Name)
	}
	if so.Spec.MinReplicaCount < 1 {
		t.Errorf("ScaledObject may scale workers to %d; sweeps, polls and archives need one", so.Spec.MinReplicaCount)
	}
	if so.Spec.MaxReplicaCount < so.Spec.MinReplicaCount {
		t.Errorf("ScaledObject: maxReplicaCount %d < minReplicaCount %d", so.Spec.MaxReplicaCount, so.Spec.MinReplicaCount)
	}
	if len(so.Spec.Triggers) != 1 || so.Spec.Triggers[0].Type != "prometheus" ||
		!strings.Contains(so.Spec.Triggers[0].Metadata["query"], `queue="kontextq:submit"`) {
		t.Errorf("ScaledObject triggers %+v; want one Prometheus trigger on the submit queue", so.Spec.Triggers)
	}
}

func checkKubernetes(t *testing.T, dir string, b built) {
	var settings string
	for name := range b.configMaps {
		if strings.HasPrefix(name, "kontextq-settings") {
			settings = name
		}
	}
	if settings == "" {
		t.Fatalf("%s: no kontextq-settings ConfigMap", dir)
	}

	w := b.deployments["kontextq-worker"]
	s := b.deployments["kontextq-serve"]
	if w == nil || s == nil {
		t.Fatalf("%s: want Deployments kontextq-worker and kontextq-serve, have %v", dir, b.deployments)
	}
	for _, d := range []*appsv1.Deployment{w, s} {
		where := dir + ": Deployment " + d.Name
		sel := d.Spec.Selector.MatchLabels
		if !labelsMatch(sel, d.Spec.Template.Labels) {
			t.Errorf("%s: selector %v does not select its pods %v", where, sel, d.Spec.Template.Labels)
		}
		pod := d.Spec.Template.Spec
		if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
			t.Errorf("%s: pods may run as root", where)
		}
		vols := map[string]corev1.Volume{}
		for _, v := range pod.Volumes {
			vols[v.Name] = v
			if v.PersistentVolumeClaim != nil && b.pvcs[v.PersistentVolumeClaim.ClaimName] == nil {
				t.Errorf("%s: volume %s claims %q, which is not here", where, v.Name, v.PersistentVolumeClaim.ClaimName)
			}
		}
		if len(pod.Containers) != 1 {
			t.Fatalf("%s: %d containers, want 1", where, len(pod.Containers))
		}
		c := pod.Containers[0]
		for _, m := range c.VolumeMounts {
			if _, ok := vols[m.Name]; !ok {
				t.Errorf("%s: mounts volume %q, which the pod does not have", where, m.Name)
			}
		}
		for _, e := range c.EnvFrom {
			if e.ConfigMapRef != nil && e.ConfigMapRef.Name != settings {
				t.Errorf("%s: reads ConfigMap %q, not %q", where, e.ConfigMapRef.Name, settings)
			}
			if e.SecretRef != nil && e.SecretRef.Name != "kontextq-secrets" {
				t.Errorf("%s: reads Secret %q, not kontextq-secrets", where, e.SecretRef.Name)
			}
		}
		env := map[string]corev1.EnvVar{}
		for _, e := range c.Env {
			env[e.Name] = e
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name != "kontextq-secrets" {
				t.Errorf("%s: %s from Secret %q, not kontextq-secrets", where, e.Name, e.ValueFrom.SecretKeyRef.Name)
			}
		}
		for _, secret := range []string{"KIE_API_KEY", "REDIS_URL"} {
			e, ok := env[secret]
			if !ok || e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Key != secret {
				t.Errorf("%s: %s must come from the Secret's key %s, not the manifest", where, secret, secret)
			}
		}
		ports := map[string]int32{}
		for _, p := range c.Ports {
			ports[p.Name] = p.ContainerPort
		}
		for what, p := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
			if p == nil || p.HTTPGet == nil {
				t.Errorf("%s: no HTTP %s probe", where, what)
				continue
			}
			if _, ok := ports[p.HTTPGet.Port.String()]; !ok && p.HTTPGet.Port.IntValue() == 0 {
				t.Errorf("%s: %s probe on port %q, which the container does not name", where, what, p.HTTPGet.Port.String())
			}
		}
	}

	// The worker: probed on its metrics listener, and given the time to stop that it needs.
	wc := w.Spec.Template.Spec.Containers[0]
	listen := ""
	for i, a := range wc.Args {
		if a == "--listen" && i+1 < len(wc.Args) {
			listen = wc.Args[i+1]
		}
	}
	if listen == "" || !strings.HasPrefix(listen, "0.0.0.0:") {
		t.Errorf("%s: worker args %q; want --listen 0.0.0.0:PORT, reachable by probes and Prometheus", dir, wc.Args)
	}
	for _, p := range wc.Ports {
		if p.Name == wc.LivenessProbe.HTTPGet.Port.String() && fmt.Sprint(p.ContainerPort) != strings.TrimPrefix(listen, "0.0.0.0:") {
			t.Errorf("%s: worker probes port %d, but listens on %s", dir, p.ContainerPort, listen)
		}
	}
	if wc.LivenessProbe.HTTPGet.Path != "/healthz" || wc.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Errorf("%s: worker probes %s and %s; it answers /healthz and /readyz", dir, wc.LivenessProbe.HTTPGet.Path, wc.ReadinessProbe.HTTPGet.Path)
	}
	grace := w.Spec.Template.Spec.TerminationGracePeriodSeconds
	if grace == nil || time.Duration(*grace)*time.Second <= worker.StopTimeout {
		t.Errorf("%s: worker terminationGracePeriodSeconds %s; a worker may take %s to stop (worker.StopTimeout)", dir, secondsOf(grace), worker.StopTimeout)
	}

	// serve: its Service reaches it.
	svc := b.services["kontextq-serve"]
	if svc == nil {
		t.Fatalf("%s: no Service kontextq-serve", dir)
	}
	if !labelsMatch(svc.Spec.Selector, s.Spec.Template.Labels) || labelsMatch(svc.Spec.Selector, w.Spec.Template.Labels) {
		t.Errorf("%s: Service selector %v must select serve's pods and not the workers'", dir, svc.Spec.Selector)
	}
	sc := s.Spec.Template.Spec.Containers[0]
	for _, p := range svc.Spec.Ports {
		found := false
		for _, cp := range sc.Ports {
			found = found || cp.Name == p.TargetPort.String() || cp.ContainerPort == p.TargetPort.IntVal
		}
		if !found {
			t.Errorf("%s: Service port %s targets %s, which serve's container does not have", dir, p.Name, p.TargetPort.String())
		}
	}

	// The disruption budget covers the workers.
	pdb := b.pdbs["kontextq-worker"]
	if pdb == nil {
		t.Fatalf("%s: no PodDisruptionBudget kontextq-worker", dir)
	}
	if !labelsMatch(pdb.Spec.Selector.MatchLabels, w.Spec.Template.Labels) || labelsMatch(pdb.Spec.Selector.MatchLabels, s.Spec.Template.Labels) {
		t.Errorf("%s: PodDisruptionBudget selects %v; want the workers only", dir, pdb.Spec.Selector.MatchLabels)
	}
}

// labelsMatch reports whether a selector selects labels.
func labelsMatch(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func secondsOf(p *int64) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}
