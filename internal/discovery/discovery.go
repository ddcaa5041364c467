// Package discovery turns target entries into the addresses to probe, and
// keeps them current: a host:port entry is resolved again every interval
// (a name with several addresses is one target per address), and a
// file:PATH entry is a Prometheus file_sd file, read again when it changes.
// What fails keeps the targets it gave last, so a DNS hiccup or a
// half-written file never drops a target.
//
// Goroutines: Run, in the caller's; everything else is called from it or
// before it starts.
package discovery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.yaml.in/yaml/v2"
)

// FilePrefix marks an entry that names a file_sd file.
const FilePrefix = "file:"

// STAMPPrefix marks a host:port entry, or a file_sd file's target, to be
// probed with STAMP (RFC 8762) instead of udpprobe's own protocol.
const STAMPPrefix = "stamp://"

// Target is one address to probe and its label: the entry as written, or,
// for a name with several addresses, the address itself. The label is also
// what the datagram names the target by.
type Target struct {
	Label string
	Addr  netip.AddrPort
	STAMP bool // a STAMP Session-Reflector, not a udpprobe receiver
}

// Family is the address family whose addresses are probed.
type Family string

// The families: AnyFamily probes every address a name has.
const (
	AnyFamily Family = "any"
	IPv4      Family = "ipv4"
	IPv6      Family = "ipv6"
)

// Has reports whether a is of the family ("" is AnyFamily).
func (f Family) Has(a netip.Addr) bool {
	a = a.Unmap()
	switch f {
	case IPv4:
		return a.Is4()
	case IPv6:
		return a.Is6()
	}
	return true
}

// network is what a lookup of the family's addresses asks for.
func (f Family) network() string {
	switch f {
	case IPv4:
		return "ip4"
	case IPv6:
		return "ip6"
	}
	return "ip"
}

// Resolver looks up a host's addresses (net.DefaultResolver does).
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Options configure a Discovery.
type Options struct {
	Entries []string // host:port, or FilePrefix and a path
	// Interval is how often names are resolved again; files are checked
	// for changes every FileCheck, and read again at least every Interval.
	Interval, FileCheck time.Duration
	Resolver            Resolver // nil: net.DefaultResolver
	// Self reports addresses of this host that must not be probed; nil:
	// none.
	Self func(netip.AddrPort) bool
	// Family keeps the addresses of one family: a name is looked up in
	// it alone, and an address of the other (in a file_sd file, say) gives
	// no target. "": AnyFamily.
	Family Family
	Logger *zap.Logger
	// Failed counts a resolution or a file read that failed, by source
	// ("dns" or "file"); nil: not counted.
	Failed func(source string)
}

// Discovery keeps the targets of a list of entries.
type Discovery struct {
	opts  Options
	errs  []error             // what failed in the current pass
	last  map[string][]Target // by entry: what it gave when it last worked
	files map[string]fileState
}

type fileState struct {
	mod  time.Time
	size int64
	read time.Time // when it was last read
}

// New checks the entries' syntax; nothing is resolved yet.
func New(opts Options) (*Discovery, error) {
	if opts.Resolver == nil {
		opts.Resolver = net.DefaultResolver
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	for _, e := range opts.Entries {
		if err := Check(e); err != nil {
			return nil, fmt.Errorf("target %q: %w", e, err)
		}
	}
	return &Discovery{opts: opts, last: map[string][]Target{}, files: map[string]fileState{}}, nil
}

// Check reports whether an entry is well formed: a file:PATH with a path,
// or a host:port with a host and a port from 1 to 65535.
func Check(entry string) error {
	if path, ok := strings.CutPrefix(entry, FilePrefix); ok {
		if path == "" {
			return errors.New("no path")
		}
		return nil
	}
	entry, _ = strings.CutPrefix(entry, STAMPPrefix)
	host, port, err := net.SplitHostPort(entry)
	if err != nil {
		return errors.New("not host:port")
	}
	if host == "" {
		return errors.New("no host")
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		return errors.New("no port from 1 to 65535")
	}
	return nil
}

// Targets returns the targets of every entry, each label once, in the
// entries' order: names resolved now if resolve is set, else as last
// resolved; files read again if they changed, or were last read an
// interval ago.
func (d *Discovery) Targets(ctx context.Context, now time.Time, resolve bool) []Target {
	d.errs = d.errs[:0]
	var out []Target
	seen := map[string]bool{}
	for _, e := range d.opts.Entries {
		for _, t := range d.entry(ctx, e, now, resolve) {
			if seen[t.Label] || d.opts.Self != nil && d.opts.Self(t.Addr) {
				continue
			}
			seen[t.Label] = true
			out = append(out, t)
		}
	}
	return out
}

// entry returns what one entry gives now, or what it gave last if that
// fails.
func (d *Discovery) entry(ctx context.Context, e string, now time.Time, resolve bool) []Target {
	if path, ok := strings.CutPrefix(e, FilePrefix); ok {
		return d.file(ctx, e, path, now)
	}
	if !resolve {
		return d.last[e]
	}
	ts, err := d.resolve(ctx, e)
	if err != nil {
		d.failed("dns", "cannot resolve a target; probing the addresses it had", e, err)
		return d.last[e]
	}
	d.last[e] = ts
	return ts
}

// Resolve is Targets with every name resolved now, and what failed on the
// way: for targets given once, where any failure is an error.
func (d *Discovery) Resolve(ctx context.Context, now time.Time) ([]Target, error) {
	ts := d.Targets(ctx, now, true)
	return ts, errors.Join(d.errs...)
}

func (d *Discovery) failed(source, msg, entry string, err error) {
	d.errs = append(d.errs, fmt.Errorf("target %s: %w", entry, err))
	d.opts.Logger.Warn(msg, zap.String("entry", entry), zap.Error(err))
	if d.opts.Failed != nil {
		d.opts.Failed(source)
	}
}

// resolve turns host:port into its targets: an address as written is its
// own label; a name with one address keeps the entry as its label, a name
// with several gives each address its own.
func (d *Discovery) resolve(ctx context.Context, e string) ([]Target, error) {
	hostPort, stamp := strings.CutPrefix(e, STAMPPrefix)
	ts, err := d.resolveHostPort(ctx, hostPort, e)
	for i := range ts {
		ts[i].STAMP = stamp
		if stamp && ts[i].Label != e {
			ts[i].Label = STAMPPrefix + ts[i].Label
		}
	}
	return ts, err
}

// resolveHostPort resolves host:port, the entry e without its prefix.
func (d *Discovery) resolveHostPort(ctx context.Context, hostPort, e string) ([]Target, error) {
	host, portText, err := net.SplitHostPort(hostPort)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("port %q", portText)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if !d.opts.Family.Has(a) {
			return nil, nil // the other family's address of a dual-stack host
		}
		return []Target{{Label: e, Addr: netip.AddrPortFrom(a.Unmap(), uint16(port))}}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := d.opts.Resolver.LookupNetIP(ctx, d.opts.Family.network(), host)
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, errors.New("no addresses")
	}
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	addrs = slices.DeleteFunc(addrs, func(a netip.Addr) bool { return !d.opts.Family.Has(a) })
	if len(addrs) == 0 {
		return nil, fmt.Errorf("no %s addresses", d.opts.Family)
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	addrs = slices.Compact(addrs)
	if len(addrs) == 1 {
		return []Target{{Label: e, Addr: netip.AddrPortFrom(addrs[0], uint16(port))}}, nil
	}
	ts := make([]Target, len(addrs))
	for i, a := range addrs {
		ap := netip.AddrPortFrom(a, uint16(port))
		ts[i] = Target{Label: ap.String(), Addr: ap}
	}
	return ts, nil
}

// file reads a file_sd file if it changed or was last read an interval
// ago, and resolves the entries it lists; if it cannot be read or parsed,
// it keeps what it gave last.
func (d *Discovery) file(ctx context.Context, e, path string, now time.Time) []Target {
	fi, err := os.Stat(path)
	if err != nil {
		if st, ok := d.files[path]; !ok || !st.mod.IsZero() {
			// Said once per change: the file went away, or was never there.
			d.files[path] = fileState{read: now}
			d.failed("file", "cannot read a file_sd file; probing the targets it had", e, err)
		}
		return d.last[e]
	}
	st := d.files[path]
	if fi.ModTime().Equal(st.mod) && fi.Size() == st.size && now.Sub(st.read) < d.opts.Interval {
		return d.last[e]
	}
	d.files[path] = fileState{mod: fi.ModTime(), size: fi.Size(), read: now}
	entries, err := ReadFileSD(path)
	if err != nil {
		d.failed("file", "a file_sd file does not parse; probing the targets it had", e, err)
		return d.last[e]
	}
	var ts []Target
	for _, te := range entries {
		if err := Check(te); err != nil || strings.HasPrefix(te, FilePrefix) {
			d.failed("file", "a file_sd file lists a target that is not host:port; it is left out", e,
				fmt.Errorf("target %q", te))
			continue
		}
		got, err := d.resolve(ctx, te)
		if err != nil {
			// A name in the file that does not resolve keeps its last
			// addresses, as an entry of its own would.
			d.failed("dns", "cannot resolve a target; probing the addresses it had", te, err)
			got = d.last[te]
		} else {
			d.last[te] = got
		}
		ts = append(ts, got...)
	}
	d.last[e] = ts
	return ts
}

// group is one element of a file_sd file.
type group struct {
	Targets []string          `json:"targets" yaml:"targets"`
	Labels  map[string]string `json:"labels" yaml:"labels"`
}

// ReadFileSD reads the target entries of a Prometheus file_sd file: JSON
// (a .json file) or YAML (anything else), a list of groups with targets
// and labels. The labels are not used.
func ReadFileSD(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var groups []group
	if strings.HasSuffix(path, ".json") {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		err = dec.Decode(&groups)
	} else {
		err = yaml.UnmarshalStrict(b, &groups)
	}
	if err != nil {
		return nil, err
	}
	var entries []string
	for _, g := range groups {
		entries = append(entries, g.Targets...)
	}
	return entries, nil
}

// Run calls update with the targets whenever they change, checking every
// FileCheck (files) and Interval (names), until ctx is done.
func (d *Discovery) Run(ctx context.Context, prev []Target, update func([]Target)) {
	every := d.opts.Interval
	if d.opts.FileCheck > 0 {
		every = min(every, d.opts.FileCheck)
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	lastDNS := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			resolve := now.Sub(lastDNS) >= d.opts.Interval
			if resolve {
				lastDNS = now
			}
			if ts := d.Targets(ctx, now, resolve); !slices.Equal(ts, prev) {
				prev = ts
				update(ts)
			}
		}
	}
}
