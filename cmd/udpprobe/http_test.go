package main

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// blockingCollector holds every scrape until release is closed.
type blockingCollector struct {
	desc    *prometheus.Desc
	entered chan struct{}
	release chan struct{}
}

func (c *blockingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }
func (c *blockingCollector) Collect(ch chan<- prometheus.Metric) {
	c.entered <- struct{}{}
	<-c.release
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, 1)
}

// TestScrapeLimit: four scrapes at once are served; a fifth, while they
// last, is refused with 503 at once rather than queued.
func TestScrapeLimit(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := &blockingCollector{desc: prometheus.NewDesc("udpprobe_test_slow", "A scrape that waits.", nil, nil),
		entered: make(chan struct{}, 8), release: make(chan struct{})}
	reg.MustRegister(c)
	var ready atomic.Bool
	srv := httptest.NewServer(newMux(reg, "receiver", &ready))
	defer srv.Close()
	var wg sync.WaitGroup
	codes := make(chan int, 4)
	for range 4 {
		wg.Go(func() {
			resp, err := http.Get(srv.URL + "/metrics")
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		})
	}
	for range 4 {
		select {
		case <-c.entered:
		case <-time.After(10 * time.Second):
			t.Fatal("four scrapes did not all start")
		}
	}
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("a fifth scrape at once: %d, want 503", resp.StatusCode)
	}
	close(c.release)
	wg.Wait()
	close(codes)
	for code := range codes {
		if code != http.StatusOK {
			t.Errorf("a scrape within the limit: %d", code)
		}
	}
}
