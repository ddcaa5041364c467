// Package config reads udpprobe's configuration from UDPPROBE_* environment
// variables. Only cmd/udpprobe uses it; components receive plain option
// structs. Every problem is reported at once, naming the variable and what it
// accepts, and a UDPPROBE_* variable the mode does not know is an error, so a
// typo never passes silently.
package config

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kelseyhightower/envconfig"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/udpprobe/udpprobe/internal/discovery"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// Prefix is the environment variable prefix, without the underscore.
const Prefix = "UDPPROBE"

// The default ports: UDP 6464 for probes, HTTP 8464 (receiver) and 8465
// (sender) for metrics, outside the 9100-9999 range that the Prometheus
// default port allocations page has fully handed out.

// Logging is shared by every mode.
type Logging struct {
	LogLevel  string `split_words:"true" default:"info" desc:"debug, info, warn or error"`
	LogFormat string `split_words:"true" default:"console" desc:"console (human-readable) or json"`
}

// Auth is datagram authentication, which both modes read.
type Auth struct {
	HMACKey     string `envconfig:"HMAC_KEY" desc:"shared key authenticating every datagram (HMAC-SHA-256), 16 to 256 bytes; two, comma-separated, during a rotation: the first signs, both are accepted; empty: off"`
	HMACKeyFile string `envconfig:"HMAC_KEY_FILE" desc:"file holding the key instead, or two keys on two lines"`
	// Keys are the keys read from either, checked by Validate.
	Keys [][]byte `ignored:"true"`
}

// enabled reports whether a key is configured, before Validate reads it.
func (a *Auth) enabled() bool { return a.HMACKey != "" || a.HMACKeyFile != "" }

// tagSize is what authentication adds to a datagram: the tag, if enabled.
func (a *Auth) tagSize() int {
	if a.enabled() {
		return wire.TagSize
	}
	return 0
}

// validate reads the keys into a.Keys.
func (a *Auth) validate() error {
	var list []string
	switch {
	case a.HMACKey != "" && a.HMACKeyFile != "":
		return errors.New("UDPPROBE_HMAC_KEY and UDPPROBE_HMAC_KEY_FILE are both set: set one")
	case a.HMACKey != "":
		list = strings.Split(a.HMACKey, ",")
	case a.HMACKeyFile != "":
		var err error
		if list, err = readKeyFile("UDPPROBE_HMAC_KEY_FILE", a.HMACKeyFile); err != nil {
			return err
		}
	default:
		return nil
	}
	where := "UDPPROBE_HMAC_KEY"
	if a.HMACKeyFile != "" {
		where = "UDPPROBE_HMAC_KEY_FILE " + a.HMACKeyFile
	}
	a.Keys = nil
	for _, k := range list {
		a.Keys = append(a.Keys, []byte(strings.TrimSpace(k)))
	}
	if err := wire.CheckKeys(a.Keys); err != nil {
		return fmt.Errorf("%s: %v (openssl rand -hex 32 makes a key)", where, err)
	}
	return nil
}

// KeysFromFile reads and checks the keys of a key file, as
// UDPPROBE_HMAC_KEY_FILE is read; name says where the path came from.
func KeysFromFile(name, path string) ([][]byte, error) {
	list, err := readKeyFile(name, path)
	if err != nil {
		return nil, err
	}
	var keys [][]byte
	for _, k := range list {
		keys = append(keys, []byte(k))
	}
	if err := wire.CheckKeys(keys); err != nil {
		return nil, fmt.Errorf("%s %s: %v (openssl rand -hex 32 makes a key)", name, path, err)
	}
	return keys, nil
}

// readKeyFile reads a key file: one key, or two on two lines.
func readKeyFile(name, path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var list []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			list = append(list, l)
		}
	}
	return list, nil
}

// StampAuth is STAMP's authenticated mode, for the reflector and for a
// sender's stamp:// targets.
type StampAuth struct {
	StampHMACKeyFile string `envconfig:"STAMP_HMAC_KEY_FILE" desc:"STAMP's authenticated mode (the reflector's, and a sender's for its stamp:// targets): a file holding the HMAC-SHA-256 key, 16 to 256 bytes, or two on two lines during a rotation; empty: unauthenticated mode"`
	// StampKeys are the keys read from the file, checked by validate.
	StampKeys [][]byte `ignored:"true"`
}

func (s *StampAuth) validate() error {
	if s.StampHMACKeyFile == "" {
		return nil
	}
	var err error
	s.StampKeys, err = KeysFromFile("UDPPROBE_STAMP_HMAC_KEY_FILE", s.StampHMACKeyFile)
	return err
}

// Stamp is the STAMP Session-Reflector, which receivers and mesh nodes run
// beside their own protocol, on a socket of its own.
type Stamp struct {
	StampListenAddress string `envconfig:"STAMP_LISTEN_ADDRESS" desc:"UDP address of the STAMP Session-Reflector (RFC 8762, RFC 8972), stateful: :862 is the standard port, which needs CAP_NET_BIND_SERVICE; empty: off"`
	StampAuth
}

func (s *Stamp) validate() []error {
	var errs []error
	if s.StampListenAddress != "" {
		errs = append(errs, validateListen("udp", "UDPPROBE_STAMP_LISTEN_ADDRESS", s.StampListenAddress))
	}
	if s.StampHMACKeyFile != "" && s.StampListenAddress == "" {
		return append(errs, errors.New("UDPPROBE_STAMP_HMAC_KEY_FILE is set but UDPPROBE_STAMP_LISTEN_ADDRESS is not: no reflector to authenticate"))
	}
	return append(errs, s.StampAuth.validate())
}

// Traffic is how a sender or mesh node sends its probes.
type Traffic struct {
	DSCP         int    `default:"0" desc:"DSCP of every probe, 0 to 63 (46: EF), said in the datagram: the receiver counts those that arrive with another"`
	ECN          string `default:"off" desc:"ECN codepoint of every probe: off (Not-ECT), ect0 or ect1; the receiver counts those marked CE on the way and those that arrive Not-ECT"`
	DontFragment bool   `split_words:"true" default:"false" desc:"send every probe with Don't Fragment (IPv4) and unfragmented (IPv6), whatever path MTU the host learnt: a probe larger than the path's MTU is lost, or refused as a send error where it exceeds this host's link, never delivered in fragments"`
	IPFamily     string `split_words:"true" default:"any" desc:"addresses probed: any (every address a target's name has, each its own target), ipv4 or ipv6 (a name's addresses of that family alone; a dual-stack name is one target, labelled by the name)"`
	Flows        int    `default:"1" desc:"source ports each target is probed from, 1 to 64: each its own stream at UDPPROBE_RATE / n with its port for life, so ECMP and LAG members hash them apart, and receivers count each flow, each taking a place of their UDPPROBE_MAX_PEERS (not STAMP targets: one flow)"`
}

// MaxFlows bounds a sender's flows: sockets, and per-flow series at the
// receivers.
const MaxFlows = 64

// ECN codepoints (RFC 3168).
var ecnCodes = map[string]uint8{"off": 0, "ect1": 1, "ect0": 2}

// Family is the address family probed.
func (t *Traffic) Family() discovery.Family { return discovery.Family(t.IPFamily) }

// TrafficClass is the IPv4 TOS or IPv6 traffic class byte of the probes:
// DSCP in the high six bits, ECN in the low two.
func (t *Traffic) TrafficClass() uint8 { return uint8(t.DSCP)<<2 | ecnCodes[t.ECN] }

// validate reports every out-of-range value, and a target given as an
// address the family leaves out.
func (t *Traffic) validate(targets []string) error {
	var errs []error
	switch f := t.Family(); f {
	case discovery.AnyFamily, discovery.IPv4, discovery.IPv6:
		for _, e := range targets {
			host, _, err := net.SplitHostPort(strings.TrimPrefix(e, discovery.STAMPPrefix))
			if a, perr := netip.ParseAddr(host); err == nil && perr == nil && !f.Has(a) {
				errs = append(errs, fmt.Errorf("UDPPROBE_TARGETS lists %q, which UDPPROBE_IP_FAMILY=%s leaves out", e, f))
			}
		}
	default:
		errs = append(errs, fmt.Errorf("UDPPROBE_IP_FAMILY=%q: must be any, ipv4 or ipv6", t.IPFamily))
	}
	if t.DSCP < 0 || t.DSCP > 63 {
		errs = append(errs, fmt.Errorf("UDPPROBE_DSCP=%d: must be 0 to 63", t.DSCP))
	}
	if _, ok := ecnCodes[t.ECN]; !ok {
		errs = append(errs, fmt.Errorf("UDPPROBE_ECN=%q: must be off, ect0 or ect1", t.ECN))
	}
	if t.Flows < 1 || t.Flows > MaxFlows {
		errs = append(errs, fmt.Errorf("UDPPROBE_FLOWS=%d: must be 1 to %d", t.Flows, MaxFlows))
	}
	return errors.Join(errs...)
}

// Common is what every mode reads besides its own settings: the web
// endpoint's TLS and auth, datagram authentication, logging.
type Common struct {
	WebConfigFile     string `split_words:"true" desc:"exporter-toolkit web configuration file: TLS, basic auth and a rate limit for the HTTP endpoints; empty: plain HTTP"`
	ClassicHistograms bool   `split_words:"true" default:"true" desc:"expose histograms with classic buckets beside native ones; false: native only, a histogram one series to a Prometheus that scrapes native histograms"`
	Auth
	Logging
}

// validate checks the common settings and the mode's web address.
func (c *Common) validate(webListenAddress string) []error {
	errs := c.Logging.validate()
	errs = append(errs, c.Auth.validate())
	errs = append(errs, validateTCPAddr("UDPPROBE_WEB_LISTEN_ADDRESS", webListenAddress))
	return append(errs, validateWebConfig(c.WebConfigFile))
}

// Receiver is the receiver's configuration.
type Receiver struct {
	WebListenAddress   string        `split_words:"true" default:":8464" desc:"HTTP address for /metrics, /-/healthy and /-/ready"`
	ListenAddress      string        `split_words:"true" default:":6464" desc:"UDP address to receive probes on"`
	LossTimeout        time.Duration `split_words:"true" default:"3s" desc:"waiting time before a missing datagram is lost (RFC 7680), 10ms to 10m"`
	SummaryInterval    time.Duration `split_words:"true" default:"10s" desc:"period of the per-peer summary log line, 1s to 24h; 0 turns it off"`
	MaxPeers           int           `split_words:"true" default:"100" desc:"peers (a sender and the target it names this receiver by, each of its flows apart) tracked at once, 1 to 2000 (what a scrape serves); datagrams from more are counted and ignored"`
	PeerExpiry         time.Duration `split_words:"true" default:"1h" desc:"a silent sender is forgotten and its series deleted after this, more than the loss timeout, up to 30 days"`
	ReceiveBuffer      int           `split_words:"true" default:"4194304" desc:"requested socket receive buffer in bytes, 0 (kernel default) to 1073741824"`
	Reflect            bool          `split_words:"true" default:"false" desc:"send every valid probe back to its source, same size, for senders with UDPPROBE_ROUND_TRIP=true"`
	ReflectRate        float64       `split_words:"true" default:"1000" desc:"replies per second per peer at most, 1 to 1000000; bursts of a tenth of a second pass"`
	ReflectBudget      float64       `split_words:"true" default:"10000" desc:"replies per second to all peers together at most, 1 to 10000000; bursts of a tenth of a second pass"`
	ReflectBudgetBytes float64       `split_words:"true" default:"16777216" desc:"reply bytes per second to all peers together at most, 65536 to 17179869184; bounds what an open reflector can be made to send"`
	PeerDetail
	Stamp
	Common
}

// PeerDetail is what a receiver or a mesh node measures of each peer
// beyond its counts, and when it trusts a one-way delay.
type PeerDetail struct {
	HopCount            bool   `split_words:"true" default:"true" desc:"export each peer's hop count and path changes, from the hop limit its sender says it sent with: 2 series a peer; false, with UDPPROBE_DEPTH_METRICS=false, keeps a pair at 30 series with native histograms only"`
	DepthMetrics        bool   `split_words:"true" default:"true" desc:"export each peer's PDV (RFC 5481), 3-reordering (RFC 4737 section 5), loss periods in seconds and unavailable seconds: 4 series a peer with native histograms only, 39 with classic buckets; false, with UDPPROBE_HOP_COUNT=false, keeps a pair at 30 series with native histograms only"`
	OneWayDelayMaxError string `split_words:"true" default:"100ms" desc:"one-way delay is recorded only while both hosts' clocks say they are synchronised and their maximum errors add up to at most this, 1us to 1m; off records every delay that is not negative (one host, or clocks kept by means the kernel does not know)"`
}

// MaxPeers is the largest peer table a receiver may be given: a scrape of
// 2,000 peers, 164,000 series, takes about 0.2 s and 13 MiB of text
// (BenchmarkScrape: 1.7 s and 67 MiB at 10,000, which 4 concurrent
// scrapes and a 10 s scrape timeout cannot afford).
const MaxPeers = 2000

// Mode names.
const (
	ModeSender   = "sender"
	ModeReceiver = "receiver"
	ModeMesh     = "mesh"
)

// specs is every mode's configuration, in the order help prints them.
var specs = []struct {
	mode string
	spec func() any
}{
	{ModeSender, func() any { return &Sender{} }},
	{ModeReceiver, func() any { return &Receiver{} }},
	{ModeMesh, func() any { return &Mesh{} }},
}

// defaultName sets an empty UDPPROBE_NAME to the host name.
func defaultName(name *string) error {
	if *name != "" {
		return nil
	}
	host, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("UDPPROBE_NAME is not set and the host name is unknown: %w", err)
	}
	*name = host
	return nil
}

// LoadReceiver reads and validates the receiver's configuration.
func LoadReceiver() (*Receiver, error) {
	c := &Receiver{}
	return c, load(ModeReceiver, c, c.Validate)
}

// load fills spec and reports every problem at once: unknown variables,
// values that do not parse, then (if all parsed) values out of range.
func load(mode string, spec any, validate func() error) error {
	unknown := checkUnknown(mode)
	if err := checkSyntax(spec); err != nil {
		return errors.Join(unknown, err)
	}
	if err := envconfig.Process(Prefix, spec); err != nil {
		return errors.Join(unknown, err) // checkSyntax let through what cannot be
	}
	return errors.Join(unknown, validate())
}

// checkSyntax reports every set variable of spec whose value does not
// parse as its type, not only the first: whole numbers must be decimal
// (envconfig would read 010 as octal 8 and 0x10 as 16).
func checkSyntax(spec any) error {
	var b strings.Builder
	if err := envconfig.Usagef(Prefix, spec, &b, "{{range .}}{{usage_key .}}\t{{usage_type .}}\n{{end}}"); err != nil {
		panic(err) // the specs are static; a failure here is a programming error
	}
	var errs []error
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		key, typ, _ := strings.Cut(line, "\t")
		v, ok := os.LookupEnv(key)
		if !ok {
			continue
		}
		var err error
		kind := ""
		switch typ {
		case "Integer":
			kind = "whole number"
			if _, err = strconv.ParseInt(v, 10, strconv.IntSize); err == nil && !decimal.MatchString(v) {
				err = errors.New("not decimal")
			}
		case "Float":
			kind = "number"
			_, err = strconv.ParseFloat(v, 64)
			if err == nil && !decimalFloat.MatchString(v) && v != "NaN" {
				err = errors.New("not decimal")
			}
		case "Duration":
			kind = "duration such as 3s or 500ms"
			_, err = time.ParseDuration(v)
		case "True or False":
			kind = "true or false"
			_, err = strconv.ParseBool(v)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%q: not a valid %s", key, v, kind))
		}
	}
	return errors.Join(errs...)
}

var (
	decimal      = regexp.MustCompile(`^[+-]?(0|[1-9][0-9]*)$`)
	decimalFloat = regexp.MustCompile(`^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$`)
)

// keys lists the variables a mode reads.
func keys(mode string) []string {
	var spec any
	for _, s := range specs {
		if s.mode == mode {
			spec = s.spec()
		}
	}
	var b strings.Builder
	if err := envconfig.Usagef(Prefix, spec, &b, "{{range .}}{{usage_key .}}\n{{end}}"); err != nil {
		panic(err) // the specs are static; a failure here is a programming error
	}
	return strings.Fields(b.String())
}

// checkUnknown rejects UDPPROBE_* variables the mode does not read.
func checkUnknown(mode string) error {
	own := keys(mode)
	var errs []error
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, Prefix+"_") || slices.Contains(own, k) {
			continue
		}
		other := ""
		for _, s := range specs {
			if s.mode != mode && other == "" && slices.Contains(keys(s.mode), k) {
				other = s.mode
			}
		}
		if other != "" {
			errs = append(errs, fmt.Errorf("%s is a %s setting; the %s does not read it", k, other, mode))
			continue
		}
		errs = append(errs, fmt.Errorf("%s is not a udpprobe setting (see 'udpprobe help')", k))
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

// Validate reports every out-of-range value.
func (c *Receiver) Validate() error {
	errs := c.Common.validate(c.WebListenAddress)
	errs = append(errs, validateListen("udp", "UDPPROBE_LISTEN_ADDRESS", c.ListenAddress))
	errs = append(errs, validateLossTimeout(c.LossTimeout))
	errs = append(errs, c.Stamp.validate()...)
	return errors.Join(append(errs, c.validateTable()...)...)
}

// DelayMaxError is UDPPROBE_ONE_WAY_DELAY_MAX_ERROR: the bound on the sum of
// both clocks' maximum errors under which one-way delay is recorded, 0 for
// off.
func (c *PeerDetail) DelayMaxError() (time.Duration, error) {
	if c.OneWayDelayMaxError == "off" {
		return 0, nil
	}
	d, err := time.ParseDuration(c.OneWayDelayMaxError)
	if err != nil || d < time.Microsecond || d > time.Minute {
		return 0, fmt.Errorf("UDPPROBE_ONE_WAY_DELAY_MAX_ERROR=%q: must be off or a duration from 1us to 1m", c.OneWayDelayMaxError)
	}
	return d, nil
}

// validateTable checks the settings of the peer table and the reflector.
func (c *Receiver) validateTable() []error {
	var errs []error
	if c.SummaryInterval != 0 {
		errs = append(errs, inRange("UDPPROBE_SUMMARY_INTERVAL", c.SummaryInterval, time.Second, 24*time.Hour))
	}
	if c.MaxPeers < 1 || c.MaxPeers > MaxPeers {
		errs = append(errs, fmt.Errorf("UDPPROBE_MAX_PEERS=%d: must be 1 to %d, what one scrape serves in well under a second", c.MaxPeers, MaxPeers))
	}
	if c.PeerExpiry <= c.LossTimeout || c.PeerExpiry > 30*24*time.Hour {
		errs = append(errs, fmt.Errorf("UDPPROBE_PEER_EXPIRY=%v: must be longer than UDPPROBE_LOSS_TIMEOUT (%v) and at most 720h",
			c.PeerExpiry, c.LossTimeout))
	}
	if c.ReceiveBuffer < 0 || c.ReceiveBuffer > 1<<30 {
		errs = append(errs, fmt.Errorf("UDPPROBE_RECEIVE_BUFFER=%d: must be 0 to 1073741824 bytes", c.ReceiveBuffer))
	}
	if !(c.ReflectRate >= 1 && c.ReflectRate <= 1e6) {
		errs = append(errs, fmt.Errorf("UDPPROBE_REFLECT_RATE=%v: must be 1 to 1000000 replies per second", c.ReflectRate))
	}
	if !(c.ReflectBudget >= 1 && c.ReflectBudget <= 1e7) {
		errs = append(errs, fmt.Errorf("UDPPROBE_REFLECT_BUDGET=%v: must be 1 to 10000000 replies per second", c.ReflectBudget))
	}
	if _, err := c.DelayMaxError(); err != nil {
		errs = append(errs, err)
	}
	if !(c.ReflectBudgetBytes >= 1<<16 && c.ReflectBudgetBytes <= 1<<34) {
		errs = append(errs, fmt.Errorf("UDPPROBE_REFLECT_BUDGET_BYTES=%v: must be 65536 to 17179869184 bytes per second", c.ReflectBudgetBytes))
	}
	return errs
}

func (l Logging) validate() []error {
	var errs []error
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, l.LogLevel) {
		errs = append(errs, fmt.Errorf("UDPPROBE_LOG_LEVEL=%q: must be debug, info, warn or error", l.LogLevel))
	}
	if l.LogFormat != "console" && l.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("UDPPROBE_LOG_FORMAT=%q: must be console or json", l.LogFormat))
	}
	return errs
}

// validateLossTimeout holds the bounds of UDPPROBE_LOSS_TIMEOUT, which the
// sender and the receiver both read and should set alike.
func validateLossTimeout(d time.Duration) error {
	return inRange("UDPPROBE_LOSS_TIMEOUT", d, 10*time.Millisecond, 10*time.Minute)
}

func inRange(name string, d, lo, hi time.Duration) error {
	if d < lo || d > hi {
		return fmt.Errorf("%s=%v: must be %v to %v", name, d, lo, hi)
	}
	return nil
}

// validateWebConfig loads an exporter-toolkit web configuration file and
// the certificates it names.
func validateWebConfig(path string) error {
	if path == "" {
		return nil
	}
	if err := web.Validate(path); err != nil {
		return fmt.Errorf("UDPPROBE_WEB_CONFIG_FILE=%q: %w", path, &WebConfigError{err})
	}
	return nil
}

// WebConfigError is a web configuration file that does not validate.
type WebConfigError struct{ Err error }

func (e *WebConfigError) Error() string { return e.Err.Error() }
func (e *WebConfigError) Unwrap() error { return e.Err }

// OnlyWebConfig reports whether every problem err reports (err from a
// Load function) is a web configuration file that does not validate: a
// daemon that runs meanwhile serves with its last good one.
func OnlyWebConfig(err error) bool {
	if join, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range join.Unwrap() {
			if !OnlyWebConfig(e) {
				return false
			}
		}
		return true
	}
	var w *WebConfigError
	return errors.As(err, &w)
}

func validateTCPAddr(name, addr string) error {
	return validateListen("tcp", name, addr)
}

// validateListen checks an address to listen on: [host]:port, never empty
// and never without a port (either would bind a random port on every
// interface).
func validateListen(network, name, addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err == nil && port == "" {
		err = errors.New("no port")
	}
	if err == nil {
		if network == "udp" {
			_, err = net.ResolveUDPAddr(network, addr)
		} else {
			_, err = net.ResolveTCPAddr(network, addr)
		}
	}
	if err != nil {
		return fmt.Errorf("%s=%q: must be [host]:port, such as :6464 or 127.0.0.1:6464: %v", name, addr, err)
	}
	return nil
}

func validateTarget(t string) error {
	if err := discovery.Check(t); err != nil {
		return fmt.Errorf("UDPPROBE_TARGETS entry %q: must be host:port with a port from 1 to 65535, stamp://host:port, or file:PATH (%v)", t, err)
	}
	if strings.HasPrefix(t, discovery.FilePrefix) || strings.HasPrefix(t, discovery.STAMPPrefix) {
		return nil // a STAMP test packet carries no target label
	}
	if !wire.ValidTarget([]byte(t)) {
		return fmt.Errorf("UDPPROBE_TARGETS entry %q: must be at most %d characters of A-Z a-z 0-9 . _ : - [ ] %%, "+
			"as datagrams carry it for the receiver's target label", t, wire.MaxTargetLen)
	}
	return nil
}

// Usage writes the table of variables of every mode.
func Usage(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 1, 0, 2, ' ', 0)
	const format = "VARIABLE\tDEFAULT\tDESCRIPTION\n{{range .}}{{usage_key .}}\t{{usage_default .}}\t{{usage_description .}}\n{{end}}"
	for _, m := range specs {
		fmt.Fprintf(tw, "\nudpprobe %s\n", m.mode)
		if err := envconfig.Usagef(Prefix, m.spec(), tw, format); err != nil {
			return err
		}
	}
	return tw.Flush()
}
