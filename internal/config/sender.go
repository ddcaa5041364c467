package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/udpprobe/udpprobe/internal/discovery"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// Sender is the sender's configuration.
type Sender struct {
	WebListenAddress string        `split_words:"true" default:":8465" desc:"HTTP address for /metrics, /-/healthy and /-/ready"`
	Targets          []string      `split_words:"true" desc:"receivers to probe, comma-separated: host:port (IPv6 as [addr]:port; a name with several addresses is a target per address), stamp://host:port (a STAMP Session-Reflector, with UDPPROBE_ROUND_TRIP=true) or file:PATH (a Prometheus file_sd file); required"`
	ResolveInterval  time.Duration `split_words:"true" default:"30s" desc:"how often target names are resolved again and file_sd files read again at the latest (a changed file is read within a second), 1s to 1h"`
	Rate             float64       `split_words:"true" default:"100" desc:"datagrams per second to each target, 0.1 to 1000000"`
	PayloadSize      int           `split_words:"true" default:"0" desc:"UDP payload bytes per datagram, 91 + name length + target label's length (+ 16 with a key) to 65507; 0 picks the smallest for each target"`
	Name             string        `split_words:"true" desc:"this sender's name, the sender label on both ends' series: 1-64 of [A-Za-z0-9._:-]; default: the host name"`
	RoundTrip        bool          `split_words:"true" default:"false" desc:"expect every datagram back from a receiver with UDPPROBE_REFLECT=true: round-trip time and loss per direction"`
	LossTimeout      time.Duration `split_words:"true" default:"3s" desc:"with UDPPROBE_ROUND_TRIP, waiting time for a reply before the round trip is lost (RFC 7680), 10ms to 10m"`
	StampAuth
	Traffic
	Common
}

// LoadSender reads and validates the sender's configuration.
func LoadSender() (*Sender, error) {
	c := &Sender{}
	return c, load(ModeSender, c, func() error {
		if err := defaultName(&c.Name); err != nil {
			return err
		}
		return c.Validate()
	})
}

// minPayload is the smallest datagram that carries the name, the longest
// target given as host:port and, with authentication, the tag.
func (c *Sender) minPayload() int {
	return wire.MinSize(len(c.Name), c.longestTarget()) + c.Auth.tagSize()
}

// longestTarget is the length of the longest target given as host:port.
func (c *Sender) longestTarget() int {
	n := 0
	for _, t := range c.Targets {
		if !strings.HasPrefix(t, discovery.FilePrefix) {
			n = max(n, len(t))
		}
	}
	return n
}

// Validate reports every out-of-range value.
func (c *Sender) Validate() error {
	errs := c.Common.validate(c.WebListenAddress)
	errs = append(errs, validateProbing("comma-separated host:port of receivers, or file:PATH",
		c.Targets, c.ResolveInterval, c.Rate, c.Name)...)
	seen := map[string]bool{}
	for _, t := range c.Targets {
		if seen[t] {
			errs = append(errs, fmt.Errorf("UDPPROBE_TARGETS lists %q twice", t))
		}
		seen[t] = true
		if strings.HasPrefix(t, discovery.STAMPPrefix) && !c.RoundTrip {
			errs = append(errs, fmt.Errorf("UDPPROBE_TARGETS lists %q: a STAMP reflector is measured by its replies; set UDPPROBE_ROUND_TRIP=true", t))
		}
	}
	errs = append(errs, c.StampAuth.validate())
	errs = append(errs, c.Traffic.validate(c.Targets))
	if lo := c.minPayload(); wire.ValidName([]byte(c.Name)) && c.PayloadSize != 0 && (c.PayloadSize < lo || c.PayloadSize > wire.MaxSize) {
		with := ""
		if c.Auth.enabled() {
			with = fmt.Sprintf(" + %d for the authentication tag", wire.TagSize)
		}
		errs = append(errs, fmt.Errorf("UDPPROBE_PAYLOAD_SIZE=%d: must be 0 or %d (%d + name length + longest target's length%s) to %d bytes",
			c.PayloadSize, lo, wire.MinSize(0, 0), with, wire.MaxSize))
	}
	errs = append(errs, validateLossTimeout(c.LossTimeout))
	return errors.Join(errs...)
}

// validateProbing checks what a sender and a mesh node both read to
// probe: the targets (what describes them when there are none), the
// resolve interval, the rate and the name.
func validateProbing(what string, targets []string, resolve time.Duration, rate float64, name string) []error {
	var errs []error
	if len(targets) == 0 {
		errs = append(errs, errors.New("UDPPROBE_TARGETS is required: "+what))
	}
	for _, t := range targets {
		errs = append(errs, validateTarget(t))
	}
	if resolve < time.Second || resolve > time.Hour {
		errs = append(errs, fmt.Errorf("UDPPROBE_RESOLVE_INTERVAL=%v: must be 1s to 1h", resolve))
	}
	if !(rate >= 0.1 && rate <= 1e6) {
		errs = append(errs, fmt.Errorf("UDPPROBE_RATE=%v: must be 0.1 to 1000000 datagrams per second", rate))
	}
	if !wire.ValidName([]byte(name)) {
		errs = append(errs, fmt.Errorf("UDPPROBE_NAME=%q: must be 1 to %d characters of A-Z a-z 0-9 . _ : -",
			name, wire.MaxNameLen))
	}
	return errs
}
