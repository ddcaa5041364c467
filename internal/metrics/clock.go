package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// NewClock registers the gauges of the host clock's accuracy, read at each
// scrape: udpprobe_clock_synchronised and udpprobe_clock_max_error_seconds.
// read returns what the kernel says; when it fails, the scrape has neither
// gauge rather than a made-up value.
func NewClock(reg prometheus.Registerer, read func() (synchronised bool, maxError time.Duration, err error)) {
	c := component{reg: reg, sub: "clock"}
	reg.MustRegister(&clockCollector{
		read: read,
		synchronised: c.desc("synchronised",
			"1 if the kernel says the host clock is synchronised to UTC by an external source (NTP, PTP), else 0: one-way delays mean something only between two synchronised hosts."),
		maxError: c.desc("max_error_seconds",
			"The kernel's maximum error of the host clock; it grows while the clock is not synchronised, to 16 s."),
	})
}

type clockCollector struct {
	read                   func() (bool, time.Duration, error)
	synchronised, maxError *prometheus.Desc
}

func (c *clockCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.synchronised
	ch <- c.maxError
}

func (c *clockCollector) Collect(ch chan<- prometheus.Metric) {
	sync, maxErr, err := c.read()
	if err != nil {
		return
	}
	v := 0.0
	if sync {
		v = 1
	}
	ch <- prometheus.MustNewConstMetric(c.synchronised, prometheus.GaugeValue, v)
	ch <- prometheus.MustNewConstMetric(c.maxError, prometheus.GaugeValue, maxErr.Seconds())
}
