package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/exporter-toolkit/web"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v2"
)

// webConfigCheckEvery is how often the operator's web configuration file is
// read again.
var webConfigCheckEvery = 10 * time.Second

// lastGood keeps the web configuration exporter-toolkit serves with: a
// copy of the operator's file as it was when it last validated. The
// toolkit reads its file at every request and connection; given the
// operator's own, a file that breaks while the daemon runs (an editor's
// half-written save, a bad hash) turns every endpoint into a 500. check
// reads the operator's file again: a change that validates replaces the
// copy, one that does not is warned about and the copy stays.
type lastGood struct {
	src  string // the operator's file
	dir  string // its directory, which relative paths in it are relative to
	mem  *memFile
	seen []byte // the operator's file as last read
	log  *zap.Logger
	ok   prometheus.Gauge // 1 while the operator's file is the one served
}

// newLastGood takes a copy of src, which must validate. The copy lives in
// memory: the root filesystem may be read-only.
func newLastGood(src string, log *zap.Logger, ok prometheus.Gauge) (*lastGood, error) {
	abs, err := filepath.Abs(src)
	if err != nil {
		return nil, err
	}
	mem, err := newMemFile()
	if err != nil {
		return nil, err
	}
	l := &lastGood{src: src, dir: filepath.Dir(abs), mem: mem, log: log, ok: ok}
	if err := l.load(); err != nil {
		mem.Close()
		return nil, err
	}
	return l, nil
}

// path is the file to give exporter-toolkit.
func (l *lastGood) path() string { return l.mem.path() }

// Close releases the copy.
func (l *lastGood) Close() error { return l.mem.Close() }

// load reads the operator's file, if it changed since it was last read,
// and replaces the copy with it if it validates.
func (l *lastGood) load() error {
	b, err := os.ReadFile(l.src)
	if err == nil && l.seen != nil && bytes.Equal(b, l.seen) {
		return nil
	}
	l.seen = b
	if err == nil {
		var abs []byte
		if abs, err = absolutePaths(b, l.dir); err == nil {
			err = l.mem.replace(abs, web.Validate)
		}
	}
	if err != nil {
		l.ok.Set(0)
		return err
	}
	l.ok.Set(1)
	return nil
}

// check is load for a running daemon: it says what became of a change.
func (l *lastGood) check() {
	before := l.seen
	err := l.load()
	switch {
	case err != nil && !bytes.Equal(before, l.seen):
		l.log.Warn("the web configuration file changed and is invalid: serving with the last good one until it is fixed",
			zap.String("file", l.src), zap.Error(err))
	case err == nil && !bytes.Equal(before, l.seen):
		l.log.Info("the web configuration file changed: serving with it", zap.String("file", l.src))
	}
}

// run checks the operator's file every webConfigCheckEvery until ctx is done.
func (l *lastGood) run(ctx context.Context) error {
	tick := time.NewTicker(webConfigCheckEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			l.check()
		}
	}
}

// tlsPathKeys are the keys of tls_server_config whose values are files,
// relative to the configuration file's directory when not absolute.
var tlsPathKeys = map[string]bool{"cert_file": true, "key_file": true, "client_ca_file": true}

// absolutePaths rewrites a web configuration so that the files it names
// are absolute, joined with dir where relative: the copy lives elsewhere.
// Anything else passes as it is; what does not parse is left to
// web.Validate to refuse.
func absolutePaths(b []byte, dir string) ([]byte, error) {
	var doc yaml.MapSlice
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	for i := range doc {
		if doc[i].Key != "tls_server_config" {
			continue
		}
		tls, ok := doc[i].Value.(yaml.MapSlice)
		if !ok {
			return b, nil
		}
		for j := range tls {
			key, _ := tls[j].Key.(string)
			path, isString := tls[j].Value.(string)
			if tlsPathKeys[key] && isString && path != "" && !filepath.IsAbs(path) {
				tls[j].Value = filepath.Join(dir, path)
			}
		}
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("rewrite: %w", err)
	}
	return out, nil
}
