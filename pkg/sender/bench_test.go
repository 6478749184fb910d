package sender

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkSend measures a full attempt against a local server; "baseline"
// is the same request (same headers) through a bare client, so the
// difference is the sender's own cost: breaker, timeout context, guard,
// classification, bounded body read. Both include the server's work, since
// it shares the machine.
func BenchmarkSend(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"ok":true}`))
	}))
	defer srv.Close()

	b.Run("sender", func(b *testing.B) {
		s := newSender(b, Config{AllowedNetworks: loopback(), IdempotencyHeader: DefaultIdempotencyHeader})
		j := newJob(srv.URL + "/x")
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if out := s.Send(b.Context(), j); out.Class != Succeeded {
					b.Errorf("send: %v %v", out.Class, out.Err)
				}
			}
		})
	})

	b.Run("baseline", func(b *testing.B) {
		tr := &http.Transport{MaxIdleConnsPerHost: DefaultMaxConnsPerHost}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr}
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req, _ := http.NewRequestWithContext(b.Context(), http.MethodGet, srv.URL+"/x", nil)
				req.Header.Set("User-Agent", DefaultUserAgent) // the same bytes on the wire
				req.Header.Set(DefaultIdempotencyHeader, "job-1")
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					continue
				}
				io.ReadAll(resp.Body)
				resp.Body.Close()
			}
		})
	})
}
