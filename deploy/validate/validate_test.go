// Package validate checks the deployment files in deploy/: the Kubernetes
// manifests against the Kubernetes API types (unknown or misspelt fields
// fail), and the Dockerfile, compose file and systemd unit against the
// properties the README promises. It is its own module so that the
// relay's dependency graph does not carry the Kubernetes API.
package validate

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

func read(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestKubernetesManifests decodes every manifest strictly into its API type.
func TestKubernetesManifests(t *testing.T) {
	files, _ := filepath.Glob("../k8s/*.yaml")
	if len(files) < 4 {
		t.Fatalf("manifests: %v", files)
	}
	var dep *appsv1.Deployment
	var svc *corev1.Service
	var pdb *policyv1.PodDisruptionBudget
	kinds := map[string]int{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range bytes.Split(b, []byte("\n---\n")) {
			var meta struct {
				APIVersion string `json:"apiVersion"`
				Kind       string `json:"kind"`
			}
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			var obj any
			switch meta.APIVersion + " " + meta.Kind {
			case "apps/v1 Deployment":
				dep = &appsv1.Deployment{}
				obj = dep
			case "v1 Service":
				svc = &corev1.Service{}
				obj = svc
			case "policy/v1 PodDisruptionBudget":
				pdb = &policyv1.PodDisruptionBudget{}
				obj = pdb
			case "v1 ConfigMap":
				obj = &corev1.ConfigMap{}
			case "v1 Secret":
				obj = &corev1.Secret{}
			case "v1 ServiceAccount":
				obj = &corev1.ServiceAccount{}
			default:
				t.Fatalf("%s: unexpected %s %s", f, meta.APIVersion, meta.Kind)
			}
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				t.Errorf("%s: %s does not match the Kubernetes API: %v", f, meta.Kind, err)
			}
			kinds[meta.Kind]++
		}
	}
	for _, k := range []string{"Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "Secret"} {
		if kinds[k] == 0 {
			t.Errorf("no %s manifest", k)
		}
	}
	if dep == nil || svc == nil || pdb == nil {
		t.FailNow()
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 2 {
		t.Error("the Deployment runs fewer than two replicas")
	}
	labels := dep.Spec.Template.Labels
	for k, v := range svc.Spec.Selector {
		if labels[k] != v {
			t.Error("the Service selects no pod of the Deployment")
		}
	}
	for k, v := range pdb.Spec.Selector.MatchLabels {
		if labels[k] != v {
			t.Error("the PodDisruptionBudget selects no pod of the Deployment")
		}
	}
	pod := dep.Spec.Template.Spec
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Error("pods may run as root")
	}
	c := pod.Containers[0]
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Error("no readiness probe on /readyz")
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Error("no liveness probe on /healthz")
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("the container's root filesystem is writable or it may escalate privileges")
	}
	if len(c.EnvFrom) == 0 || c.EnvFrom[0].ConfigMapRef == nil {
		t.Error("configuration does not come from the ConfigMap")
	}
	if !slices.Contains(c.Args, "--secret-file") {
		t.Error("the root secret is not read from the mounted Secret")
	}
}

// TestDockerfile: multi-stage, static build, unprivileged final stage.
func TestDockerfile(t *testing.T) {
	var froms []string
	user := ""
	static := false
	sc := bufio.NewScanner(bytes.NewReader(read(t, "Dockerfile")))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			froms = append(froms, f[1])
			user = ""
		case "USER":
			user = f[1]
		case "RUN":
			static = static || strings.Contains(sc.Text(), "CGO_ENABLED=0")
		}
	}
	if len(froms) < 2 {
		t.Errorf("not a multi-stage build: %v", froms)
	}
	if user == "" || strings.HasPrefix(user, "0") || strings.HasPrefix(user, "root") {
		t.Errorf("the final stage runs as %q", user)
	}
	if !static {
		t.Error("the binary is not built with CGO_ENABLED=0")
	}
}

// TestCompose: the topology the README describes, with health checks and
// secrets from files.
func TestCompose(t *testing.T) {
	var c struct {
		Services map[string]struct {
			Image       string         `json:"image"`
			Healthcheck map[string]any `json:"healthcheck"`
			Secrets     []string       `json:"secrets"`
			DependsOn   any            `json:"depends_on"`
			ReadOnly    bool           `json:"read_only"`
			Command     []string       `json:"command"`
		} `json:"services"`
		Secrets map[string]struct {
			File string `json:"file"`
		} `json:"secrets"`
	}
	if err := yaml.Unmarshal(read(t, "docker-compose.yml"), &c); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"postgres", "s3", "parleyd-1", "parleyd-2", "lb"} {
		if _, ok := c.Services[s]; !ok {
			t.Errorf("no %s service", s)
		}
	}
	for _, s := range []string{"postgres", "parleyd-1", "parleyd-2"} {
		if c.Services[s].Healthcheck == nil {
			t.Errorf("%s has no health check", s)
		}
	}
	for _, s := range []string{"parleyd-1", "parleyd-2"} {
		svc := c.Services[s]
		if !slices.Contains(svc.Secrets, "parley_root_key") || !svc.ReadOnly || !slices.Contains(svc.Command, "--secret-file") {
			t.Errorf("%s: root secret not from a file, or writable root filesystem", s)
		}
	}
	if c.Secrets["parley_root_key"].File == "" {
		t.Error("the root secret is not a file secret")
	}
	// Where Docker Compose is installed, it must accept the file too.
	if exec.Command("docker", "compose", "version").Run() == nil {
		cmd := exec.Command("docker", "compose", "-f", "../docker-compose.yml", "config", "-q")
		cmd.Env = append(os.Environ(), "S3_ACCESS_KEY=k", "S3_SECRET_KEY=s", "POSTGRES_PASSWORD=p")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("docker compose config: %v %s", err, out)
		}
	}
}

// TestSystemdUnit: the hardening directives are there, and systemd-analyze
// accepts the unit where it is installed.
func TestSystemdUnit(t *testing.T) {
	unit := string(read(t, "parleyd.service"))
	for _, d := range []string{"NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
		"PrivateDevices=yes", "DynamicUser=yes", "CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "RestrictSUIDSGID=yes",
		"MemoryDenyWriteExecute=yes", "SystemCallFilter=@system-service", "UMask=0077", "LoadCredential=root.key:"} {
		if !strings.Contains(unit, d) {
			t.Errorf("unit lacks %s", d)
		}
	}
	if path, err := exec.LookPath("systemd-analyze"); err == nil {
		out, err := exec.Command(path, "verify", "../parleyd.service").CombinedOutput()
		// verify complains about the missing binary on a build machine; any
		// other complaint is a defect.
		for _, l := range strings.Split(string(out), "\n") {
			if l != "" && !strings.Contains(l, "/usr/local/bin/parleyd") {
				t.Errorf("systemd-analyze verify: %s (%v)", l, err)
			}
		}
	}
}

// TestHAProxyConfig: HAProxy itself accepts haproxy.cfg, and it has what
// rolling restarts need: retries elsewhere on a failed or 503 answer, fast
// health checks, WebSockets closed when their replica goes down, and
// replicas found again through Docker's DNS when replaced.
func TestHAProxyConfig(t *testing.T) {
	cfg := string(read(t, "haproxy.cfg"))
	for _, want := range []string{"option httpchk GET /readyz", "option redispatch", "retries ", "retry-on conn-failure empty-response response-timeout 503",
		"on-marked-down shutdown-sessions", "resolvers docker init-addr last,libc,none", "nameserver dns 127.0.0.11:53", "timeout tunnel"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("haproxy.cfg lacks %q", want)
		}
	}
	haproxy, err := exec.LookPath("haproxy")
	if err != nil {
		if os.Getenv("PARLEY_TEST_HAPROXY_REQUIRED") != "" {
			t.Fatal("haproxy not found (scripts/with-haproxy installs it)")
		}
		t.Skip("haproxy not installed: run through scripts/with-haproxy (make test does)")
	}
	out, err := exec.Command(haproxy, "-c", "-f", filepath.Join("..", "haproxy.cfg")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Configuration file is valid") {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
}
