package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// rawResult is what the plain net/http baseline achieved.
type rawResult struct {
	n     int
	wall  time.Duration
	cpu   time.Duration // this process's CPU time during the run
	fails int64
	busy  time.Duration // the whole machine's CPU time meanwhile
}

func (r rawResult) rate() float64 { return float64(r.n) / r.wall.Seconds() }

// rawClient sends n requests, the same ones the jobs describe (POST with a
// small JSON body, Idempotency-Key and User-Agent), over conns concurrent
// keep-alive connections, with no queue at all: the best a single process
// can do against this target, and the yardstick for jetpost.
func rawClient(ctx context.Context, baseURL, keyPrefix string, n, conns int) (rawResult, error) {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: conns,
		MaxIdleConns:        max(1024, 4*conns),
		IdleConnTimeout:     90 * time.Second,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var next, fails atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	cpu0 := selfCPU()
	busy0 := machineBusy()
	start := time.Now()
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4<<10)
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				s := strconv.FormatInt(i, 10)
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/items/"+s, bytes.NewReader([]byte(`{"n":`+s+`}`)))
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Idempotency-Key", keyPrefix+s)
				req.Header.Set("User-Agent", "jetpost/1")
				resp, err := client.Do(req)
				if err != nil {
					fails.Add(1)
					errOnce.Do(func() { firstErr = err })
					continue
				}
				// Read the whole body, as the sender does (it keeps it).
				for {
					if _, err := resp.Body.Read(buf); err != nil {
						if err != io.EOF {
							fails.Add(1)
						}
						break
					}
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					fails.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	res := rawResult{n: n, wall: time.Since(start), cpu: selfCPU() - cpu0, fails: fails.Load()}
	res.busy = machineBusy() - busy0
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	if res.fails > 0 {
		return res, fmt.Errorf("raw client: %d of %d requests failed (first: %v)", res.fails, n, firstErr)
	}
	return res, nil
}

// others is the average number of cores busy with processes other than
// this one and the target during the run.
func (r rawResult) others(targetCPU time.Duration) float64 {
	return max(0, (r.busy-r.cpu-targetCPU).Seconds()/r.wall.Seconds())
}
