package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/udpprobe/udpprobe/internal/testkit/scrape"
	"github.com/udpprobe/udpprobe/internal/testkit/testproc"
)

// TestMeshPlaybook renders the mesh playbook's templates with Ansible
// itself, for an inventory of three loopback nodes, and runs a node with
// what they configure: the members file lists every node's probe address
// (udpprobe_mesh_address where given, else ansible_host), the scrape file
// every metrics endpoint, and `udpprobe mesh` takes the environment file
// as it is written, but for the members file's path, becomes ready, finds
// that every member is itself (they are all this host's addresses), and
// stops cleanly.
func TestMeshPlaybook(t *testing.T) {
	ansible := testproc.Require(t, "ANSIBLE", "apt-get install ansible-core", "ansible")
	bin := testproc.Build(t, "../cmd/udpprobe")
	dir := t.TempDir()
	_, udpPort, _ := strings.Cut(testproc.FreeAddr(t, "udp"), ":")
	_, webPort, _ := strings.Cut(testproc.FreeAddr(t, "tcp"), ":")
	inventory := filepath.Join(dir, "mesh.ini")
	write(t, inventory, "[mesh]\nnode-1 ansible_host=127.0.0.1\nnode-2 ansible_host=127.0.0.2\n"+
		"node-3 ansible_host=localhost udpprobe_mesh_address=127.0.0.3\n")
	render := func(template, host string) string {
		t.Helper()
		dst := filepath.Join(dir, host+"-"+strings.TrimSuffix(template, ".j2"))
		cmd := exec.Command(ansible, host, "-i", inventory, "-c", "local", "-m", "ansible.builtin.template",
			"-a", "src="+filepath.Join("ansible", "templates", template)+" dest="+dst,
			"-e", "@"+filepath.Join("ansible", "group_vars", "all.yml"),
			"-e", "udpprobe_port="+udpPort, "-e", "udpprobe_mesh_web_port="+webPort)
		cmd.Env = append(os.Environ(), "ANSIBLE_LOCALHOST_WARNING=false", "ANSIBLE_NOCOLOR=true")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("ansible %s %s: %v\n%s", host, template, err, out)
		}
		return dst
	}
	targets := func(path string) []string {
		t.Helper()
		var groups []struct{ Targets []string }
		if err := json.Unmarshal(read(t, path), &groups); err != nil || len(groups) != 1 {
			t.Fatalf("%s: %v, %d groups\n%s", path, err, len(groups), read(t, path))
		}
		return groups[0].Targets
	}
	members := render("members.json.j2", "node-1")
	for file, port := range map[string]string{members: udpPort, render("mesh-scrape.json.j2", "node-1"): webPort} {
		want := []string{"127.0.0.1:" + port, "127.0.0.2:" + port, "127.0.0.3:" + port}
		if got := targets(file); !slices.Equal(got, want) {
			t.Errorf("%s lists %q, want %q", filepath.Base(file), got, want)
		}
	}

	var env []string
	for _, line := range strings.Split(string(read(t, render("udpprobe-mesh.env.j2", "node-1"))), "\n") {
		if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if line == "UDPPROBE_TARGETS=file:/etc/udpprobe/members.json" {
			line = "UDPPROBE_TARGETS=file:" + members
		}
		env = append(env, line)
	}
	for _, want := range []string{"UDPPROBE_NAME=node-1", "UDPPROBE_LISTEN_ADDRESS=:" + udpPort,
		"UDPPROBE_WEB_LISTEN_ADDRESS=:" + webPort, "UDPPROBE_TARGETS=file:" + members} {
		if !slices.Contains(env, want) {
			t.Fatalf("the environment file sets %q, not %q", env, want)
		}
	}
	node := testproc.Start(t, append(env, "UDPPROBE_LOG_FORMAT=json"), bin, "mesh")
	web := "http://127.0.0.1:" + webPort
	awaitReady(t, web+"/-/ready")
	// Every member is this host: by its own address, or by the name a
	// hello to it comes back with.
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := scrape.Get(web + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		targets, answered := m[`udpprobe_sender_targets{sender="node-1"}`], m["udpprobe_receiver_hellos_answered_total"]
		if targets == 0 && answered > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v targets, %v hellos answered; want 0 (every member is this node) and some\n%s",
				targets, answered, strings.Join(node.Lines(), "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code := node.Stop(t); code != 0 {
		t.Errorf("exit %d", code)
	}
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(fmt.Errorf("%s: %w", path, err))
	}
}
