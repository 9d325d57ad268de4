// Package manifests checks the Kubernetes manifests under deploy/kubernetes.
// It has no code of its own, only this test: every YAML document is decoded
// strictly into the Kubernetes API types (an unknown or misspelled field, a
// duplicate key or an unknown kind fails), the kustomizations are resolved by
// hand (every resource, patch and image they name must exist), and the
// settings the deployment relies on are asserted: replicas, probes, the
// restrictive security context, resources and the command lines. When kubectl
// is on PATH, `kubectl kustomize` renders the base and the overlay and the
// output is checked the same way.
package manifests

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// TestMain runs the tests in deploy/kubernetes of the repository, where the files they
// check live: this package is in the tools module, apart from the product.
func TestMain(m *testing.M) {
	if err := os.Chdir("../../../deploy/kubernetes"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

const (
	kustomizationFile = "kustomization.yaml"
	configPath        = "/etc/sweeper/config.yaml"
	configMapName     = "sweeper-config"
	nonRootID         = int64(65532)
	metricsPort       = int32(9090)
	apiPort           = int32(8080)
	// apiClientLabel is the pod label the example NetworkPolicy admits to
	// the API port.
	apiClientLabel = "sweeper.tasksweeper.io/api-client"
	// preRolloutSelector is the label selector docs/operations.md and
	// migrate-job.yaml use to apply the migrate Job (and what it needs)
	// before the rollout.
	preRolloutSelector = "app.kubernetes.io/component notin (daemon,once)"
)

var (
	daemonArgs  = []string{"--config", configPath}
	migrateArgs = []string{"--config", configPath, "migrate", "up"}
	onceArgs    = []string{"--config", configPath, "--once", "--output", "json"}
)

// object is one decoded manifest document.
type object struct {
	file string // relative to deploy/kubernetes
	kind string
	name string
	obj  any // pointer to the typed k8s.io/api value
}

func (o object) String() string { return fmt.Sprintf("%s/%s (%s)", o.kind, o.name, o.file) }

// kustomization is the part of kustomize's Kustomization type these manifests
// use, decoded strictly: a field not listed here fails the test, so adding a
// kustomize feature means teaching this test about it.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace,omitempty"`
	Resources  []string `json:"resources,omitempty"`
	Labels     []struct {
		Pairs            map[string]string `json:"pairs"`
		IncludeSelectors bool              `json:"includeSelectors,omitempty"`
		IncludeTemplates bool              `json:"includeTemplates,omitempty"`
	} `json:"labels,omitempty"`
	ConfigMapGenerator []struct {
		Name     string   `json:"name"`
		Files    []string `json:"files,omitempty"`
		Literals []string `json:"literals,omitempty"`
	} `json:"configMapGenerator,omitempty"`
	Images []struct {
		Name    string `json:"name"`
		NewName string `json:"newName,omitempty"`
		NewTag  string `json:"newTag,omitempty"`
		Digest  string `json:"digest,omitempty"`
	} `json:"images,omitempty"`
	Patches []struct {
		Path   string `json:"path,omitempty"`
		Target *struct {
			Kind string `json:"kind,omitempty"`
			Name string `json:"name,omitempty"`
		} `json:"target,omitempty"`
	} `json:"patches,omitempty"`
}

// sweeperConfig mirrors the documented config keys (docs/design.md, "Config
// keys"); the ConfigMap's config.yaml must decode into it strictly.
type sweeperConfig struct {
	Database struct {
		URL      string `json:"url,omitempty"`
		MaxConns int    `json:"max_conns,omitempty"`
	} `json:"database"`
	Sweep struct {
		Schedule         string `json:"schedule,omitempty"`
		HeartbeatTimeout string `json:"heartbeat_timeout,omitempty"`
		BatchSize        int    `json:"batch_size,omitempty"`
		MaxBatchesPerRun int    `json:"max_batches_per_run,omitempty"`
		NotifyChannel    string `json:"notify_channel,omitempty"`
		DryRun           bool   `json:"dry_run,omitempty"`
	} `json:"sweep"`
	Migrate struct {
		Auto bool `json:"auto"`
	} `json:"migrate"`
	HTTP struct {
		Listen string `json:"listen"`
	} `json:"http"`
	API struct {
		Listen string `json:"listen"`
	} `json:"api"`
	Log struct {
		Level  string `json:"level,omitempty"`
		Format string `json:"format,omitempty"`
	} `json:"log"`
	ShutdownGrace string `json:"shutdown_grace,omitempty"`
}

// decodeStrict converts YAML to JSON (failing on duplicate keys) and decodes
// it into v the way the API server does: field names are case-sensitive
// (encoding/json would take "targetport" for "targetPort"), and unknown or
// duplicate fields are errors.
func decodeStrict(data []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return err
	}
	strictErrs, err := kjson.UnmarshalStrict(j, v, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// newTyped returns a pointer to the API type for apiVersion and kind, or nil
// for a kind these manifests must not contain.
func newTyped(apiVersion, kind string) any {
	type gvk struct{ apiVersion, kind string }
	switch (gvk{apiVersion, kind}) {
	case gvk{"v1", "Namespace"}:
		return &corev1.Namespace{}
	case gvk{"v1", "ServiceAccount"}:
		return &corev1.ServiceAccount{}
	case gvk{"v1", "ConfigMap"}:
		return &corev1.ConfigMap{}
	case gvk{"v1", "Service"}:
		return &corev1.Service{}
	case gvk{"apps/v1", "Deployment"}:
		return &appsv1.Deployment{}
	case gvk{"policy/v1", "PodDisruptionBudget"}:
		return &policyv1.PodDisruptionBudget{}
	case gvk{"batch/v1", "Job"}:
		return &batchv1.Job{}
	case gvk{"batch/v1", "CronJob"}:
		return &batchv1.CronJob{}
	case gvk{"networking.k8s.io/v1", "NetworkPolicy"}:
		return &networkingv1.NetworkPolicy{}
	}
	return nil
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeDocuments decodes every non-empty YAML document in data.
func decodeDocuments(file string, data []byte) ([]object, error) {
	var out []object
	for i, doc := range docSeparator.Split(string(data), -1) {
		var head struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				Name string `json:"name"`
			} `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, i, err)
		}
		if head.APIVersion == "" && head.Kind == "" && strings.TrimSpace(stripComments(doc)) == "" {
			continue // empty document
		}
		typed := newTyped(head.APIVersion, head.Kind)
		if typed == nil {
			return nil, fmt.Errorf("%s: document %d: unexpected kind %q (apiVersion %q)", file, i, head.Kind, head.APIVersion)
		}
		if err := decodeStrict([]byte(doc), typed); err != nil {
			return nil, fmt.Errorf("%s: document %d (%s): %w", file, i, head.Kind, err)
		}
		if head.Metadata.Name == "" {
			return nil, fmt.Errorf("%s: document %d (%s): no metadata.name", file, i, head.Kind)
		}
		out = append(out, object{file: file, kind: head.Kind, name: head.Metadata.Name, obj: typed})
	}
	return out, nil
}

func stripComments(doc string) string {
	var b strings.Builder
	for line := range strings.Lines(doc) {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line)
		}
	}
	return b.String()
}

// tree is everything under deploy/kubernetes, decoded.
type tree struct {
	kustomizations map[string]*kustomization // by directory, relative
	objects        map[string][]object       // manifests by file, relative
	payloads       map[string]bool           // generator input files, relative
}

func loadTree(t *testing.T) *tree {
	t.Helper()
	tr := &tree{
		kustomizations: map[string]*kustomization{},
		objects:        map[string][]object{},
		payloads:       map[string]bool{},
	}
	var files []string
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Kustomizations first: they say which files are generator inputs, not manifests.
	for _, f := range files {
		if filepath.Base(f) != kustomizationFile {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		k := &kustomization{}
		if err := decodeStrict(data, k); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
			t.Fatalf("%s: apiVersion/kind = %s/%s", f, k.APIVersion, k.Kind)
		}
		dir := filepath.Dir(f)
		tr.kustomizations[dir] = k
		for _, g := range k.ConfigMapGenerator {
			for _, in := range g.Files {
				tr.payloads[filepath.Join(dir, in)] = true
			}
		}
	}
	for _, f := range files {
		if filepath.Base(f) == kustomizationFile || tr.payloads[f] {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := decodeDocuments(f, data)
		if err != nil {
			t.Fatal(err)
		}
		tr.objects[f] = objs
	}
	return tr
}

// resolve returns the objects a kustomization directory pulls in through its
// resources (recursively), checking that each one exists. Patch files are not
// resources and are not returned.
func (tr *tree) resolve(t *testing.T, dir string) []object {
	t.Helper()
	k, ok := tr.kustomizations[dir]
	if !ok {
		t.Fatalf("%s: no %s", dir, kustomizationFile)
	}
	var out []object
	for _, r := range k.Resources {
		p := filepath.Join(dir, r)
		st, err := os.Stat(p)
		if err != nil {
			t.Errorf("%s/%s: resource %q: %v", dir, kustomizationFile, r, err)
			continue
		}
		if st.IsDir() {
			out = append(out, tr.resolve(t, p)...)
			continue
		}
		objs, ok := tr.objects[p]
		if !ok {
			t.Errorf("%s/%s: resource %q was not decoded as a manifest", dir, kustomizationFile, r)
		}
		out = append(out, objs...)
	}
	return out
}

func find[T any](t *testing.T, objs []object, kind, name string) *T {
	t.Helper()
	for _, o := range objs {
		if o.kind == kind && o.name == name {
			v, ok := o.obj.(*T)
			if !ok {
				t.Fatalf("%s: type %T", o, o.obj)
			}
			return v
		}
	}
	t.Fatalf("no %s/%s", kind, name)
	return nil
}

func TestEveryManifestDecodesStrictly(t *testing.T) {
	tr := loadTree(t)
	kinds := map[string]int{}
	for _, objs := range tr.objects {
		for _, o := range objs {
			kinds[o.kind]++
		}
	}
	t.Logf("kustomizations: %d, manifest files: %d, objects by kind: %v", len(tr.kustomizations), len(tr.objects), kinds)
	for _, want := range []string{"Deployment", "Service", "ServiceAccount", "PodDisruptionBudget", "Job", "CronJob", "Namespace"} {
		if kinds[want] == 0 {
			t.Errorf("no %s manifest", want)
		}
	}
}

func TestStrictDecodingRejectsMistakes(t *testing.T) {
	cases := map[string]string{
		"unknown field":  "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replica: 2\n",
		"nested unknown": "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  ports:\n    - port: 1\n      targetport: 2\n",
		"duplicate key":  "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: x\n  name: y\n",
		"unknown kind":   "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata:\n  name: x\n",
		"wrong version":  "apiVersion: batch/v1beta1\nkind: CronJob\nmetadata:\n  name: x\n",
		"wrong type":     "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec:\n  replicas: two\n",
	}
	for name, doc := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := decodeDocuments("case.yaml", []byte(doc)); err == nil {
				t.Fatal("decoded without error")
			}
		})
	}
}

func TestKustomizationsResolve(t *testing.T) {
	tr := loadTree(t)
	for dir, k := range tr.kustomizations {
		t.Run(dir, func(t *testing.T) {
			objs := tr.resolve(t, dir)
			if len(objs) == 0 {
				t.Fatal("resolves to no objects")
			}
			for _, g := range k.ConfigMapGenerator {
				for _, f := range g.Files {
					if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
						t.Errorf("configMapGenerator %s: %v", g.Name, err)
					}
				}
			}
			for _, p := range k.Patches {
				if p.Path == "" {
					t.Errorf("inline patches are not checked by this test; use a patch file")
					continue
				}
				pobjs, ok := tr.objects[filepath.Join(dir, p.Path)]
				if !ok || len(pobjs) != 1 {
					t.Errorf("patch %s: want one decoded object, have %d", p.Path, len(pobjs))
					continue
				}
				kind, name := pobjs[0].kind, pobjs[0].name
				if p.Target != nil {
					kind, name = p.Target.Kind, p.Target.Name
				}
				if !slices.ContainsFunc(objs, func(o object) bool { return o.kind == kind && o.name == name }) {
					t.Errorf("patch %s targets %s/%s, which the resources do not contain", p.Path, kind, name)
				}
			}
			images := map[string]bool{}
			for _, o := range objs {
				if spec := podSpecOf(o); spec != nil {
					for _, c := range spec.Containers {
						images[c.Image] = true
					}
				}
			}
			for _, im := range k.Images {
				if !images[im.Name] {
					t.Errorf("images: %q is used by no container (have %v)", im.Name, images)
				}
			}
		})
	}
	// Every manifest belongs to a kustomization, as a resource or a patch.
	used := map[string]bool{}
	for dir, k := range tr.kustomizations {
		for _, r := range k.Resources {
			used[filepath.Join(dir, r)] = true
		}
		for _, p := range k.Patches {
			used[filepath.Join(dir, p.Path)] = true
		}
	}
	for f := range tr.objects {
		if !used[f] {
			t.Errorf("%s is listed in no kustomization", f)
		}
	}
}

func podSpecOf(o object) *corev1.PodSpec {
	switch v := o.obj.(type) {
	case *appsv1.Deployment:
		return &v.Spec.Template.Spec
	case *batchv1.Job:
		return &v.Spec.Template.Spec
	case *batchv1.CronJob:
		return &v.Spec.JobTemplate.Spec.Template.Spec
	}
	return nil
}

// checkPod asserts what every sweeper pod must have: no API token, non-root
// 65532, RuntimeDefault seccomp, a read-only root, no privilege escalation,
// all capabilities dropped, resources, the DSN from a Secret and the config
// file from the ConfigMap.
func checkPod(t *testing.T, where string, spec *corev1.PodSpec, dsnSecret string) *corev1.Container {
	t.Helper()
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken must be false", where)
	}
	if spec.ServiceAccountName != "sweeper" {
		t.Errorf("%s: serviceAccountName = %q", where, spec.ServiceAccountName)
	}
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		t.Errorf("%s: uses a host namespace", where)
	}
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot ||
		psc.RunAsUser == nil || *psc.RunAsUser != nonRootID ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: pod securityContext must set runAsNonRoot, runAsUser %d, seccomp RuntimeDefault: %+v", where, nonRootID, psc)
	}
	if len(spec.Containers) != 1 || len(spec.InitContainers) != 0 {
		t.Fatalf("%s: want exactly one container", where)
	}
	c := &spec.Containers[0]
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Fatalf("%s: container has no securityContext", where)
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Errorf("%s: allowPrivilegeEscalation must be false", where)
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("%s: readOnlyRootFilesystem must be true", where)
	case sc.Privileged != nil && *sc.Privileged:
		t.Errorf("%s: privileged", where)
	case sc.Capabilities == nil || !reflect.DeepEqual(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0:
		t.Errorf("%s: capabilities must drop ALL and add none: %+v", where, sc.Capabilities)
	case sc.RunAsUser != nil && *sc.RunAsUser != nonRootID:
		t.Errorf("%s: container runAsUser = %d", where, *sc.RunAsUser)
	case sc.SeccompProfile != nil && sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Errorf("%s: container seccomp = %v", where, sc.SeccompProfile.Type)
	}
	if len(c.Command) != 0 {
		t.Errorf("%s: command %v overrides the image's ENTRYPOINT /sweeper", where, c.Command)
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, lim := c.Resources.Requests[r], c.Resources.Limits[r]
		if req.IsZero() || lim.IsZero() {
			t.Errorf("%s: %s request and limit must be set", where, r)
		} else if req.Cmp(lim) > 0 {
			t.Errorf("%s: %s request %s > limit %s", where, r, req.String(), lim.String())
		}
	}
	var dsn *corev1.EnvVar
	for i := range c.Env {
		if c.Env[i].Name == "SWEEPER_DATABASE_URL" {
			dsn = &c.Env[i]
		}
		if c.Env[i].Name == "DATABASE_URL" {
			t.Errorf("%s: use SWEEPER_DATABASE_URL, not DATABASE_URL", where)
		}
	}
	if dsn == nil || dsn.Value != "" || dsn.ValueFrom == nil || dsn.ValueFrom.SecretKeyRef == nil ||
		dsn.ValueFrom.SecretKeyRef.Name != dsnSecret || dsn.ValueFrom.SecretKeyRef.Key != "url" {
		t.Errorf("%s: SWEEPER_DATABASE_URL must come from secret %s key url: %+v", where, dsnSecret, dsn)
	}
	// The config file: a read-only mount at /etc/sweeper of the ConfigMap's config.yaml.
	var mount *corev1.VolumeMount
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].MountPath == filepath.Dir(configPath) {
			mount = &c.VolumeMounts[i]
		}
	}
	if mount == nil || !mount.ReadOnly {
		t.Fatalf("%s: no read-only volume mounted at %s", where, filepath.Dir(configPath))
	}
	var vol *corev1.Volume
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == mount.Name {
			vol = &spec.Volumes[i]
		}
	}
	if vol == nil || vol.ConfigMap == nil || !strings.HasPrefix(vol.ConfigMap.Name, configMapName) ||
		!slices.Contains(vol.ConfigMap.Items, corev1.KeyToPath{Key: "config.yaml", Path: filepath.Base(configPath)}) {
		t.Errorf("%s: volume %q must project ConfigMap %s key config.yaml to %s", where, mount.Name, configMapName, configPath)
	}
	return c
}

// probePort resolves an httpGet probe's port (a number or a container port name).
func probePort(t *testing.T, c *corev1.Container, port intstr.IntOrString) int32 {
	t.Helper()
	if port.Type == intstr.Int {
		return port.IntVal
	}
	for _, p := range c.Ports {
		if p.Name == port.StrVal {
			return p.ContainerPort
		}
	}
	t.Fatalf("probe port %q is no container port", port.StrVal)
	return 0
}

func TestDeployment(t *testing.T) {
	objs := loadTree(t).resolve(t, "base")
	d := find[appsv1.Deployment](t, objs, "Deployment", "sweeper")
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("replicas = %v, want 2", d.Spec.Replicas)
	}
	if ru := d.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 {
		t.Errorf("rollingUpdate.maxUnavailable must be 0 (a new version that cannot start must not take the old one down)")
	}
	sel, err := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("selector %v does not match the template labels %v", sel, d.Spec.Template.Labels)
	}
	spec := &d.Spec.Template.Spec
	c := checkPod(t, "Deployment", spec, "sweeper-database")
	if !slices.Equal(c.Args, daemonArgs) {
		t.Errorf("args = %q, want %q", c.Args, daemonArgs)
	}
	grace := shutdownGrace(t)
	if spec.TerminationGracePeriodSeconds == nil || time.Duration(*spec.TerminationGracePeriodSeconds)*time.Second <= grace {
		t.Errorf("terminationGracePeriodSeconds must exceed shutdown_grace %v", grace)
	}
	if len(c.Ports) != 2 || c.Ports[0].ContainerPort != metricsPort || c.Ports[0].Name != "metrics" ||
		c.Ports[1].ContainerPort != apiPort || c.Ports[1].Name != "api" {
		t.Errorf("ports = %+v, want metrics:%d and api:%d", c.Ports, metricsPort, apiPort)
	}
	for name, p := range map[string]*corev1.Probe{"livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe} {
		want := map[string]string{"livenessProbe": "/healthz", "readinessProbe": "/readyz"}[name]
		if p == nil || p.HTTPGet == nil {
			t.Errorf("%s: want an httpGet probe on %s", name, want)
			continue
		}
		if p.HTTPGet.Path != want || probePort(t, c, p.HTTPGet.Port) != metricsPort {
			t.Errorf("%s: %s on port %v, want %s on %d", name, p.HTTPGet.Path, p.HTTPGet.Port.String(), want, metricsPort)
		}
		if p.TimeoutSeconds < 1 || p.PeriodSeconds < 5 || p.FailureThreshold < 2 {
			t.Errorf("%s: timeout %ds period %ds failureThreshold %d is too eager", name, p.TimeoutSeconds, p.PeriodSeconds, p.FailureThreshold)
		}
	}
	ann := d.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != fmt.Sprint(metricsPort) || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("pod template scrape annotations = %v", ann)
	}
	sa := find[corev1.ServiceAccount](t, objs, "ServiceAccount", "sweeper")
	if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Errorf("ServiceAccount sweeper: automountServiceAccountToken must be false")
	}
}

func TestMigrateJob(t *testing.T) {
	objs := loadTree(t).resolve(t, "base")
	j := find[batchv1.Job](t, objs, "Job", "sweeper-migrate")
	c := checkPod(t, "Job sweeper-migrate", &j.Spec.Template.Spec, "sweeper-database-owner")
	if !slices.Equal(c.Args, migrateArgs) {
		t.Errorf("args = %q, want %q", c.Args, migrateArgs)
	}
	if j.Spec.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("restartPolicy = %q, want Never", j.Spec.Template.Spec.RestartPolicy)
	}
	if j.Spec.BackoffLimit == nil || *j.Spec.BackoffLimit > 2 {
		t.Errorf("backoffLimit = %v: a failed migration is the operator's call, do not retry it much", j.Spec.BackoffLimit)
	}
	if j.Spec.ActiveDeadlineSeconds == nil {
		t.Errorf("no activeDeadlineSeconds")
	}
}

func TestCronJob(t *testing.T) {
	objs := loadTree(t).resolve(t, "base")
	cj := find[batchv1.CronJob](t, objs, "CronJob", "sweeper-once")
	c := checkPod(t, "CronJob sweeper-once", &cj.Spec.JobTemplate.Spec.Template.Spec, "sweeper-database")
	if !slices.Equal(c.Args, onceArgs) {
		t.Errorf("args = %q, want %q", c.Args, onceArgs)
	}
	if cj.Spec.ConcurrencyPolicy != batchv1.ForbidConcurrent {
		t.Errorf("concurrencyPolicy = %q, want Forbid", cj.Spec.ConcurrencyPolicy)
	}
	if cj.Spec.Suspend == nil || !*cj.Spec.Suspend {
		t.Errorf("the base CronJob must be suspended (the Deployment sweeps by default)")
	}
	if cj.Spec.JobTemplate.Spec.ActiveDeadlineSeconds == nil {
		t.Errorf("no activeDeadlineSeconds on the job template")
	}
	if !regexp.MustCompile(`^(\S+\s+){4}\S+$`).MatchString(cj.Spec.Schedule) {
		t.Errorf("schedule %q is not a 5-field cron spec", cj.Spec.Schedule)
	}
}

func TestServiceAndDisruptionBudget(t *testing.T) {
	objs := loadTree(t).resolve(t, "base")
	d := find[appsv1.Deployment](t, objs, "Deployment", "sweeper")
	podLabels := labels.Set(d.Spec.Template.Labels)

	svc := find[corev1.Service](t, objs, "Service", "sweeper-metrics")
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) {
		t.Errorf("Service selector %v does not match the pods %v", svc.Spec.Selector, podLabels)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != metricsPort || svc.Spec.Ports[0].TargetPort.String() != "metrics" {
		t.Errorf("Service ports = %+v", svc.Spec.Ports)
	}

	// The API Service: ready pods only, the named api port, and browsers
	// kept on one pod (console sessions live in the pod's memory).
	api := find[corev1.Service](t, objs, "Service", "sweeper-api")
	if !labels.SelectorFromSet(api.Spec.Selector).Matches(podLabels) {
		t.Errorf("Service sweeper-api selector %v does not match the pods %v", api.Spec.Selector, podLabels)
	}
	if len(api.Spec.Ports) != 1 || api.Spec.Ports[0].Name != "api" || api.Spec.Ports[0].Port != apiPort || api.Spec.Ports[0].TargetPort.String() != "api" {
		t.Errorf("Service sweeper-api ports = %+v, want api:%d -> api", api.Spec.Ports, apiPort)
	}
	if api.Spec.PublishNotReadyAddresses {
		t.Errorf("Service sweeper-api must not send requests to pods that are not ready")
	}
	if api.Spec.SessionAffinity != corev1.ServiceAffinityClientIP {
		t.Errorf("Service sweeper-api sessionAffinity = %q, want ClientIP (console sessions are per pod)", api.Spec.SessionAffinity)
	}

	pdb := find[policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget", "sweeper")
	sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	if !sel.Matches(podLabels) {
		t.Errorf("PDB selector does not match the pods")
	}
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil {
		t.Errorf("PDB: want maxUnavailable 1")
	}
}

// TestPreRolloutSelector checks the selector of the upgrade procedure: it
// picks the migrate Job and what the Job needs, never the daemon or the CronJob.
func TestPreRolloutSelector(t *testing.T) {
	sel, err := labels.Parse(preRolloutSelector)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range loadTree(t).resolve(t, "base") {
		want := o.kind == "Job" || o.kind == "ServiceAccount"
		if got := sel.Matches(labels.Set(objectLabels(o))); got != want {
			t.Errorf("%s: selected = %v, want %v", o, got, want)
		}
	}
}

func objectLabels(o object) map[string]string {
	v := reflect.ValueOf(o.obj).Elem().FieldByName("ObjectMeta")
	return v.FieldByName("Labels").Interface().(map[string]string)
}

func TestConfigMapConfig(t *testing.T) {
	data, err := os.ReadFile("base/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg sweeperConfig
	if err := decodeStrict(data, &cfg); err != nil {
		t.Fatalf("base/config.yaml: %v", err)
	}
	if cfg.Database.URL != "" {
		t.Errorf("database.url must not be in the ConfigMap: it comes from the Secret")
	}
	if cfg.HTTP.Listen != fmt.Sprintf(":%d", metricsPort) {
		t.Errorf("http.listen = %q, the probes and the Service use :%d", cfg.HTTP.Listen, metricsPort)
	}
	if cfg.API.Listen != fmt.Sprintf(":%d", apiPort) {
		t.Errorf("api.listen = %q, the container port api and the Service sweeper-api use :%d", cfg.API.Listen, apiPort)
	}
	if cfg.Migrate.Auto {
		t.Errorf("migrate.auto must be false: the Job migrates, as the owner role")
	}
	// Every key must be a key of the shipped example config, when it exists.
	example, err := os.ReadFile("../../config.example.yaml")
	if os.IsNotExist(err) {
		t.Log("config.example.yaml not found: skipping the key comparison")
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	var have, known map[string]any
	if err := yaml.Unmarshal(data, &have); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(example, &known); err != nil {
		t.Fatalf("config.example.yaml: %v", err)
	}
	knownKeys := keyPaths("", known)
	for _, k := range keyPaths("", have) {
		if !slices.Contains(knownKeys, k) {
			t.Errorf("base/config.yaml key %s is not in config.example.yaml", k)
		}
	}
}

func keyPaths(prefix string, m map[string]any) []string {
	var out []string
	for k, v := range m {
		if sub, ok := v.(map[string]any); ok {
			out = append(out, keyPaths(prefix+k+".", sub)...)
		} else {
			out = append(out, prefix+k)
		}
	}
	sort.Strings(out)
	return out
}

func shutdownGrace(t *testing.T) time.Duration {
	t.Helper()
	data, err := os.ReadFile("base/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var cfg sweeperConfig
	if err := yaml.Unmarshal(data, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.ShutdownGrace == "" {
		return 30 * time.Second
	}
	d, err := time.ParseDuration(cfg.ShutdownGrace)
	if err != nil {
		t.Fatalf("shutdown_grace: %v", err)
	}
	return d
}

// TestRendered renders the base and the overlay with `kubectl kustomize` and
// checks the output: strict decoding again, the overlay's namespace, image and
// patches applied, and the generated ConfigMap name used by every pod.
func TestRendered(t *testing.T) {
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl not on PATH: rendering not checked (the hand resolution above still ran)")
	}
	render := func(t *testing.T, dir string) []object {
		t.Helper()
		out, err := exec.Command(kubectl, "kustomize", dir).Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr)
		}
		objs, err := decodeDocuments(dir+" (rendered)", out)
		if err != nil {
			t.Fatal(err)
		}
		return objs
	}
	base := render(t, "base")
	overlay := render(t, "overlays/example")

	for name, objs := range map[string][]object{"base": base, "overlay": overlay} {
		var cm string
		for _, o := range objs {
			if o.kind == "ConfigMap" && strings.HasPrefix(o.name, configMapName+"-") {
				cm = o.name
				if data := o.obj.(*corev1.ConfigMap).Data["config.yaml"]; data == "" {
					t.Errorf("%s: ConfigMap %s has no config.yaml", name, cm)
				}
			}
		}
		if cm == "" {
			t.Fatalf("%s: no generated ConfigMap %s-<hash>", name, configMapName)
		}
		for _, o := range objs {
			if spec := podSpecOf(o); spec != nil {
				for _, v := range spec.Volumes {
					if v.ConfigMap != nil && v.ConfigMap.Name != cm {
						t.Errorf("%s: %s mounts ConfigMap %q, rendered one is %q", name, o, v.ConfigMap.Name, cm)
					}
				}
			}
		}
	}

	d := find[appsv1.Deployment](t, overlay, "Deployment", "sweeper")
	if *d.Spec.Replicas != 3 {
		t.Errorf("overlay replicas = %d, want 3 (deployment-patch.yaml)", *d.Spec.Replicas)
	}
	c := checkPod(t, "overlay Deployment", &d.Spec.Template.Spec, "sweeper-database")
	if !slices.Equal(c.Args, daemonArgs) {
		t.Errorf("overlay args = %q", c.Args)
	}
	if got := c.Resources.Limits.Memory().String(); got != "256Mi" {
		t.Errorf("overlay memory limit = %s, want 256Mi", got)
	}
	if c.LivenessProbe == nil || c.ReadinessProbe == nil {
		t.Errorf("overlay lost the probes")
	}
	sel, _ := labels.Parse(preRolloutSelector)
	for _, o := range overlay {
		if o.kind != "Namespace" {
			ns := reflect.ValueOf(o.obj).Elem().FieldByName("ObjectMeta").FieldByName("Namespace").String()
			if ns != "sweeper" {
				t.Errorf("overlay: %s in namespace %q, want sweeper", o, ns)
			}
		}
		if spec := podSpecOf(o); spec != nil {
			if im := spec.Containers[0].Image; im != "registry.example.com/tasksweeper/sweeper:0.1.0" {
				t.Errorf("overlay: %s image %q", o, im)
			}
		}
		want := o.kind == "Job" || o.kind == "ServiceAccount" || o.kind == "ConfigMap" || o.kind == "Namespace"
		if got := sel.Matches(labels.Set(objectLabels(o))); got != want {
			t.Errorf("overlay: pre-rollout selector picks %s = %v, want %v", o, got, want)
		}
	}
}

// TestNetworkPolicy checks the example overlay's NetworkPolicy: it selects
// the daemon's pods, admits the API port only from pods labelled
// apiClientLabel and the metrics port only from the monitoring namespace, and
// names only ports the container declares.
func TestNetworkPolicy(t *testing.T) {
	objs := loadTree(t).resolve(t, "overlays/example")
	np := find[networkingv1.NetworkPolicy](t, objs, "NetworkPolicy", "sweeper")
	d := find[appsv1.Deployment](t, objs, "Deployment", "sweeper")
	sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
	if err != nil {
		t.Fatal(err)
	}
	if sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("podSelector %v does not select the daemon's pods %v", sel, d.Spec.Template.Labels)
	}
	if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
		t.Errorf("policyTypes = %v, want [Ingress]", np.Spec.PolicyTypes)
	}
	containerPorts := map[string]bool{}
	for _, p := range d.Spec.Template.Spec.Containers[0].Ports {
		containerPorts[p.Name] = true
	}

	// admitted reports whether a peer with these namespace and pod labels
	// reaches the named port.
	admitted := func(nsLabels, podLabels map[string]string, port string) bool {
		for _, rule := range np.Spec.Ingress {
			portOK := false
			for _, p := range rule.Ports {
				if p.Port == nil || p.Port.String() == port {
					portOK = true
				}
			}
			if !portOK {
				continue
			}
			for _, peer := range rule.From {
				if peer.IPBlock != nil {
					continue
				}
				var nsOK bool
				if peer.NamespaceSelector != nil {
					s, err := metav1.LabelSelectorAsSelector(peer.NamespaceSelector)
					if err != nil {
						t.Fatal(err)
					}
					nsOK = s.Matches(labels.Set(nsLabels))
				} else { // no namespaceSelector: the policy's own namespace only
					nsOK = nsLabels["kubernetes.io/metadata.name"] == "sweeper"
				}
				podOK := true
				if peer.PodSelector != nil {
					s, err := metav1.LabelSelectorAsSelector(peer.PodSelector)
					if err != nil {
						t.Fatal(err)
					}
					podOK = s.Matches(labels.Set(podLabels))
				}
				if nsOK && podOK {
					return true
				}
			}
		}
		return false
	}
	for i, rule := range np.Spec.Ingress {
		if len(rule.Ports) == 0 || len(rule.From) == 0 {
			t.Errorf("ingress rule %d opens every port or admits every peer: %+v", i, rule)
		}
		for _, p := range rule.Ports {
			if p.Port == nil || p.Port.Type != intstr.String || !containerPorts[p.Port.StrVal] {
				t.Errorf("ingress rule %d: port %v is not a named container port (%v)", i, p.Port, containerPorts)
			}
		}
	}
	ns := func(name string) map[string]string { return map[string]string{"kubernetes.io/metadata.name": name} }
	client := map[string]string{apiClientLabel: "true", "app": "billing"}
	other := map[string]string{"app": "billing"}
	prometheus := map[string]string{"app.kubernetes.io/name": "prometheus"}
	for _, c := range []struct {
		name    string
		ns, pod map[string]string
		port    string
		want    bool
	}{
		{"labelled client, API", ns("billing"), client, "api", true},
		{"labelled client in the namespace, API", ns("sweeper"), client, "api", true},
		{"unlabelled pod, API", ns("billing"), other, "api", false},
		{"labelled client, metrics", ns("billing"), client, "metrics", false},
		{"Prometheus, metrics", ns("monitoring"), prometheus, "metrics", true},
		{"Prometheus, API", ns("monitoring"), prometheus, "api", false},
		{"another namespace, metrics", ns("billing"), prometheus, "metrics", false},
	} {
		if got := admitted(c.ns, c.pod, c.port); got != c.want {
			t.Errorf("%s: admitted = %v, want %v", c.name, got, c.want)
		}
	}
}
