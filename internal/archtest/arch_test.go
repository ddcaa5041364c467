// Package archtest holds the rules of docs/architecture.md as a test, so
// that the page stays true as the code moves.
package archtest

import (
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/udpprobe/udpprobe/"

type pkg struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	Imports    []string
}

// ours lists the module's packages with their own (non-test) imports
// within the module.
func ours(t *testing.T) map[string]pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-json", module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]pkg{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimPrefix(p.ImportPath, module)
		var imports []string
		for _, i := range p.Imports {
			if strings.HasPrefix(i, module) {
				imports = append(imports, strings.TrimPrefix(i, module))
			}
		}
		p.Imports = imports
		pkgs[name] = p
	}
	return pkgs
}

// TestImportRules: sender and receiver never import each other; the
// trackers, the wire format, the socket, the clock and discovery import
// nothing of ours (but the clock's fake its clock), and stamp only wire;
// wire never imports metrics; product
// code never imports the test kit (the bench harness, a tool beside the
// tests, may).
func TestImportRules(t *testing.T) {
	pkgs := ours(t)
	if len(pkgs) < 10 {
		t.Fatalf("go list found %d packages", len(pkgs))
	}
	for name, p := range pkgs {
		for _, imp := range p.Imports {
			switch {
			case name == "internal/sender" && imp == "internal/receiver",
				name == "internal/receiver" && imp == "internal/sender":
				t.Errorf("%s imports %s: sender and receiver never import each other", name, imp)
			case slices.Contains([]string{"internal/tracker", "internal/wire", "internal/socket", "internal/clock", "internal/discovery"}, name):
				t.Errorf("%s imports %s: it imports nothing of ours", name, imp)
			case name == "internal/stamp" && imp != "internal/wire":
				t.Errorf("%s imports %s: it imports only wire (the key rules)", name, imp)
			case strings.HasPrefix(imp, "internal/testkit/") && !strings.HasPrefix(name, "internal/testkit/") && name != "bench":
				t.Errorf("%s imports %s: product code never imports the test kit", name, imp)
			}
		}
	}
}

// TestVariableNames: only cmd and config know the UDPPROBE_ variables;
// components speak of their concepts. The bench harness, like the tests,
// configures the binary through them.
func TestVariableNames(t *testing.T) {
	re := regexp.MustCompile(`UDPPROBE_[A-Z_]+`)
	for name, p := range ours(t) {
		if name == "cmd/udpprobe" || name == "internal/config" || name == "bench" || strings.HasPrefix(name, "internal/testkit/") {
			continue
		}
		for _, f := range p.GoFiles {
			b, err := os.ReadFile(filepath.Join(p.Dir, f))
			if err != nil {
				t.Fatal(err)
			}
			if m := re.Find(b); m != nil {
				t.Errorf("%s/%s names %s: only cmd and config know the variables", name, f, m)
			}
		}
	}
}
