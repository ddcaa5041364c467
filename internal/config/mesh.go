package config

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/udpprobe/udpprobe/internal/discovery"
	"github.com/udpprobe/udpprobe/internal/wire"
)

// Mesh is a mesh node's configuration: receiver, reflector and sender at
// once, over one socket.
type Mesh struct {
	WebListenAddress   string        `split_words:"true" default:":8466" desc:"HTTP address for /metrics (both sides), /-/healthy and /-/ready"`
	ListenAddress      string        `split_words:"true" default:":6464" desc:"UDP address to probe, receive and reflect on; the mesh's members listen on the same port"`
	Targets            []string      `split_words:"true" desc:"the mesh's members, comma-separated: host:port or file:PATH, as for the sender; this node among them is skipped; required"`
	ResolveInterval    time.Duration `split_words:"true" default:"30s" desc:"how often member names are resolved again and file_sd files read again at the latest, 1s to 1h"`
	Neighbours         int           `split_words:"true" default:"0" desc:"members each node probes: the k that follow it on a hash ring, so each is probed by k; 0: all, up to 1000"`
	Rate               float64       `split_words:"true" default:"10" desc:"datagrams per second to each neighbour, 0.1 to 1000000"`
	PayloadSize        int           `split_words:"true" default:"0" desc:"UDP payload bytes per datagram, 155 + name length (+ 16 with a key) to 65507; 0 picks the smallest for each neighbour"`
	Name               string        `split_words:"true" desc:"this node's name, the sender label of what it sends and the target label of what it receives: 1-64 of [A-Za-z0-9._:-]; default: the host name"`
	LossTimeout        time.Duration `split_words:"true" default:"3s" desc:"waiting time before a datagram or a round trip is lost (RFC 7680), 10ms to 10m"`
	SummaryInterval    time.Duration `split_words:"true" default:"0s" desc:"period of the per-peer summary log line, 1s to 24h; 0 turns it off"`
	MaxPeers           int           `split_words:"true" default:"2000" desc:"peers (a member and the name it probes this node by, each of its flows apart) tracked at once, 1 to 2000"`
	PeerExpiry         time.Duration `split_words:"true" default:"1h" desc:"a silent member is forgotten and its series deleted after this, more than the loss timeout, up to 30 days"`
	ReceiveBuffer      int           `split_words:"true" default:"4194304" desc:"requested socket receive buffer in bytes, 0 (kernel default) to 1073741824"`
	ReflectRate        float64       `split_words:"true" default:"1000" desc:"replies per second per peer at most, 1 to 1000000; bursts of a tenth of a second pass"`
	ReflectBudget      float64       `split_words:"true" default:"100000" desc:"replies per second to all peers together at most, 1 to 10000000; bursts of a tenth of a second pass"`
	ReflectBudgetBytes float64       `split_words:"true" default:"67108864" desc:"reply bytes per second to all peers together at most, 65536 to 17179869184"`
	PeerDetail
	Stamp
	Traffic
	Common
}

// MaxNeighbours bounds a mesh node's fan-out.
const MaxNeighbours = 1000

// LoadMesh reads and validates a mesh node's configuration.
func LoadMesh() (*Mesh, error) {
	c := &Mesh{}
	return c, load(ModeMesh, c, func() error {
		if err := defaultName(&c.Name); err != nil {
			return err
		}
		return c.Validate()
	})
}

// Validate reports every out-of-range value.
func (c *Mesh) Validate() error {
	errs := c.Common.validate(c.WebListenAddress)
	errs = append(errs, validateListen("udp", "UDPPROBE_LISTEN_ADDRESS", c.ListenAddress))
	errs = append(errs, validateProbing("the mesh's members, host:port or file:PATH",
		c.Targets, c.ResolveInterval, c.Rate, c.Name)...)
	if c.Neighbours < 0 || c.Neighbours > MaxNeighbours {
		errs = append(errs, fmt.Errorf("UDPPROBE_NEIGHBOURS=%d: must be 0 (all) to %d", c.Neighbours, MaxNeighbours))
	}
	if lo := c.minPayload(); wire.ValidName([]byte(c.Name)) && c.PayloadSize != 0 && (c.PayloadSize < lo || c.PayloadSize > wire.MaxSize) {
		errs = append(errs, fmt.Errorf("UDPPROBE_PAYLOAD_SIZE=%d: must be 0 or %d (what the longest neighbour name needs) to %d bytes",
			c.PayloadSize, lo, wire.MaxSize))
	}
	errs = append(errs, validateLossTimeout(c.LossTimeout))
	for _, t := range c.Targets {
		if strings.HasPrefix(t, discovery.STAMPPrefix) {
			errs = append(errs, fmt.Errorf("UDPPROBE_TARGETS lists %q: a mesh's members are udpprobe nodes; probe STAMP reflectors from a sender", t))
		}
	}
	errs = append(errs, c.Stamp.validate()...)
	errs = append(errs, c.Traffic.validate(c.Targets))
	return errors.Join(append(errs, c.Receiver().validateTable()...)...)
}

// Receiver is the node's receiving side as a receiver's configuration:
// one that reflects.
func (c *Mesh) Receiver() *Receiver {
	return &Receiver{WebListenAddress: c.WebListenAddress, ListenAddress: c.ListenAddress, LossTimeout: c.LossTimeout,
		SummaryInterval: c.SummaryInterval, MaxPeers: c.MaxPeers, PeerExpiry: c.PeerExpiry, ReceiveBuffer: c.ReceiveBuffer,
		Reflect: true, ReflectRate: c.ReflectRate, ReflectBudget: c.ReflectBudget, ReflectBudgetBytes: c.ReflectBudgetBytes,
		PeerDetail: c.PeerDetail, Stamp: c.Stamp, Common: c.Common}
}

// minPayload is the smallest datagram that carries the name, any
// neighbour's name and, with authentication, the tag.
func (c *Mesh) minPayload() int {
	return wire.MinSize(len(c.Name), wire.MaxNameLen) + c.Auth.tagSize()
}
