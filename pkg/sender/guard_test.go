package sender

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

func TestCheckAddr(t *testing.T) {
	refused := map[string]string{
		"127.0.0.1":          "loopback",
		"127.255.0.9":        "loopback",
		"::1":                "loopback",
		"10.0.0.1":           "private",
		"172.16.5.4":         "private",
		"192.168.1.1":        "private",
		"fd00::1":            "private",
		"169.254.169.254":    "link-local",
		"fe80::1%eth0":       "link-local",
		"100.64.0.1":         "CGNAT",
		"100.127.255.255":    "CGNAT",
		"0.0.0.0":            "unspecified",
		"0.1.2.3":            "this network",
		"::":                 "unspecified",
		"224.0.0.1":          "multicast",
		"239.1.1.1":          "multicast",
		"ff02::1":            "multicast",
		"255.255.255.255":    "broadcast",
		"::ffff:127.0.0.1":   "loopback",
		"::ffff:10.0.0.1":    "private",
		"::ffff:169.254.1.1": "link-local",
		"64:ff9b::a00:1":     "private via NAT64",
		// Special-purpose ranges of the IANA registries that are not
		// globally reachable, or that wrap an address that is not.
		"2002:a00:1::1":       "private via 6to4",
		"2002:7f00:1::":       "loopback via 6to4",
		"2002:a9fe:a9fe::1":   "link-local via 6to4",
		"::a00:1":             "IPv4-compatible",
		"::808:808":           "IPv4-compatible",
		"64:ff9b:1::a00:1":    "local-use NAT64",
		"64:ff9b:1::808:808":  "local-use NAT64",
		"fec0::1":             "site-local",
		"feff::1":             "site-local",
		"198.18.0.1":          "benchmarking",
		"198.19.255.255":      "benchmarking",
		"2001:2::1":           "benchmarking",
		"192.0.0.1":           "IETF protocol",
		"192.0.0.170":         "IETF protocol",
		"2001:1::1":           "IETF protocol",
		"2001:1ff::1":         "IETF protocol",
		"2001::a00:1":         "Teredo",
		"2001:0:4136:e378::1": "Teredo",
		"240.0.0.1":           "reserved, 240.0.0.0/4",
		"254.255.255.255":     "reserved, 240.0.0.0/4",
		"192.0.2.1":           "documentation",
		"198.51.100.7":        "documentation",
		"203.0.113.9":         "documentation",
		"2001:db8::1":         "documentation",
		"3fff::1":             "documentation",
		"192.88.99.1":         "6to4 relay",
		"100::1":              "discard-only",
		"5f00::1":             "SRv6",
		"4000::1":             "outside global unicast",
		"::ffff:0:a00:1":      "outside global unicast", // SIIT, ::ffff:0:0:0/96
		"64:ff9b::c000:201":   "documentation (TEST-NET) via NAT64",
		"::ffff:198.18.0.1":   "benchmarking",
		"::ffff:240.0.0.1":    "reserved",
		"2002:c612:1::1":      "198.18.0.0/15 via 6to4",
		"2002:6440:1::1":      "CGNAT) via 6to4",
		"2002:e000:1::1":      "multicast via 6to4",
		"2002:ffff:ffff::1":   "broadcast via 6to4",
		"2002:1:203::1":       "this network, 0.0.0.0/8 via 6to4",
		"2002:c000:0:1::1":    "IETF protocol assignments, 192.0.0.0/24 via 6to4",
		"64:ff9b::f000:1":     "reserved, 240.0.0.0/4 via NAT64",
		"64:ff9b::6440:1":     "CGNAT) via NAT64",
		"2001:1:ffff::1":      "IETF protocol",
		"fec0::%eth0":         "site-local",
	}
	for s, reason := range refused {
		err := checkAddr(netip.MustParseAddr(s), nil)
		var re *RefusedError
		if !errors.As(err, &re) || !strings.Contains(re.Reason, reason) {
			t.Errorf("%s: got %v, want refused (%s)", s, err, reason)
		}
	}
	for _, s := range []string{"8.8.8.8", "1.1.1.1", "100.128.0.1", "100.63.255.255", "172.32.0.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808",
		"2002:808:808::1", // 6to4 of a public address
		"2001:4860:4860::8888",
		"2001:200::1", // just past 2001::/23
		"2a00:1450:4001::1", "2620:4f:8000::1", "192.31.196.1", "198.17.255.255", "198.20.0.1",
		"192.0.1.1", "192.0.3.1", "192.88.98.1", "223.255.255.255", "3ffe::1", "3fff:1000::1"} {
		if err := checkAddr(netip.MustParseAddr(s), nil); err != nil {
			t.Errorf("%s: refused: %v", s, err)
		}
	}

	allowed, err := ParseNetworks("10.0.0.0/8, 127.0.0.1, fd00::/8")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"10.1.2.3", "127.0.0.1", "::ffff:127.0.0.1", "::ffff:10.9.9.9", "fd12::1"} {
		if err := checkAddr(netip.MustParseAddr(s), allowed); err != nil {
			t.Errorf("%s: refused despite the allow-list: %v", s, err)
		}
	}
	for _, s := range []string{"127.0.0.2", "192.168.0.1", "169.254.169.254"} {
		if err := checkAddr(netip.MustParseAddr(s), allowed); err == nil {
			t.Errorf("%s: allowed, but not in the allow-list", s)
		}
	}
}

func TestRefusedErrorText(t *testing.T) {
	err := checkAddr(netip.MustParseAddr("127.0.0.1"), nil)
	want := "address 127.0.0.1 is refused (loopback); allow it with JETPOST_ALLOWED_NETWORKS"
	if err == nil || err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
}

// Real sends: the guard must stop them at dial time, before any byte leaves,
// and the result must say so.
func TestSendToRefusedAddress(t *testing.T) {
	srv, hits := serve(t, func(w http.ResponseWriter, r *http.Request) {})
	port := srv.Listener.Addr().(interface{ AddrPort() netip.AddrPort }).AddrPort().Port()
	s := newSender(t, Config{Breaker: Breaker{Failures: 1}}) // no allow-list

	for _, host := range []string{
		"127.0.0.1", // the test server itself
		"localhost", // a name: the resolved address is what is checked
		"0.0.0.0",
		"[::ffff:127.0.0.1]",
		"10.0.0.1",
		"169.254.169.254",
		"100.64.0.1",
		"198.18.0.1",          // benchmarking
		"192.0.0.8",           // IETF protocol assignments
		"240.0.0.1",           // reserved
		"[2002:7f00:1::1]",    // 6to4 wrapping 127.0.0.1
		"[::7f00:1]",          // IPv4-compatible 127.0.0.1
		"[64:ff9b:1::7f00:1]", // local-use NAT64
		"[fec0::1]",           // site-local
	} {
		u := fmt.Sprintf("http://%s:%d/", host, port)
		out := s.Send(t.Context(), newJob(u))
		var re *RefusedError
		if out.Class != Permanent || out.Attempted || !errors.As(out.Err, &re) {
			t.Errorf("%s: got %v attempted=%v err=%v; want permanent, not attempted, refused", u, out.Class, out.Attempted, out.Err)
			continue
		}
		if !strings.Contains(out.Err.Error(), "is refused (") || !strings.Contains(out.Err.Error(), "JETPOST_ALLOWED_NETWORKS") {
			t.Errorf("%s: unclear error %q", u, out.Err)
		}
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("server saw %d requests", n)
	}
	// Refusals say nothing about the host: its breaker stays closed.
	for host, st := range s.BreakerStates() {
		if st != "closed" {
			t.Errorf("breaker for %s is %s", host, st)
		}
	}
}

func TestRedirectToRefusedAddress(t *testing.T) {
	srv, hits := serve(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
	})
	s := newSender(t, Config{AllowedNetworks: loopback()})
	out := s.Send(t.Context(), newJob(srv.URL))
	var re *RefusedError
	if out.Class != Permanent || !errors.As(out.Err, &re) || re.Addr != netip.MustParseAddr("169.254.169.254") {
		t.Fatalf("got %v err=%v; want permanent, refused 169.254.169.254", out.Class, out.Err)
	}
	// The first host did get a request.
	if !out.Attempted || hits.Load() != 1 {
		t.Errorf("attempted=%v, server saw %d requests; want true, 1", out.Attempted, hits.Load())
	}
	if !strings.Contains(out.Err.Error(), "redirected to http://169.254.169.254/latest/meta-data/") {
		t.Errorf("error %q does not name the redirect target", out.Err)
	}
}

func TestRedirectLimit(t *testing.T) {
	srv, hits := serve(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.URL.Path+"x", http.StatusFound) // forever
	})

	s := newSender(t, Config{AllowedNetworks: loopback(), MaxRedirects: 2})
	out := s.Send(t.Context(), newJob(srv.URL+"/r"))
	if out.Class != Permanent || !out.Attempted || out.Status != http.StatusFound || !errors.Is(out.Err, errTooManyRedirects) {
		t.Fatalf("got %v attempted=%v status=%d err=%v; want permanent 302 too many redirects", out.Class, out.Attempted, out.Status, out.Err)
	}
	if n := hits.Load(); n != 3 {
		t.Errorf("server saw %d requests, want 3 (the first and 2 redirects)", n)
	}

	hits.Store(0)
	none := newSender(t, Config{AllowedNetworks: loopback(), MaxRedirects: -1})
	out = none.Send(t.Context(), newJob(srv.URL+"/r"))
	if out.Class != Succeeded || out.Status != http.StatusFound || hits.Load() != 1 {
		t.Errorf("MaxRedirects<0: got %v status=%d after %d requests; want the 302 itself", out.Class, out.Status, hits.Load())
	}
}

func TestParseNetworks(t *testing.T) {
	got, err := ParseNetworks(" 10.0.0.0/8, 192.168.1.5,::1 , fd00::/8,, ::ffff:172.16.0.0/108, 10.1.2.3/16")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "192.168.1.5/32", "::1/128", "fd00::/8", "172.16.0.0/12", "10.1.0.0/16"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("entry %d: got %v, want %s", i, got[i], want[i])
		}
	}
	if got, err := ParseNetworks(""); err != nil || len(got) != 0 {
		t.Errorf(`ParseNetworks("") = %v, %v`, got, err)
	}
	for _, bad := range []string{"10.0.0.0/33", "nonsense", "10.0.0.1/8x", "fe80::1%eth0", "10.0.0.0/8,300.1.1.1", "10.0.0.0/"} {
		_, err := ParseNetworks(bad)
		entry := bad[strings.LastIndex(bad, ",")+1:]
		if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q", entry)) {
			t.Errorf("ParseNetworks(%q) = %v; want an error naming %q", bad, err, entry)
		}
	}
}

// BenchmarkCheckAddr is the guard's cost per dial for public addresses,
// which go through every check.
func BenchmarkCheckAddr(b *testing.B) {
	for _, s := range []string{"93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c", "2002:808:808::1"} {
		ip := netip.MustParseAddr(s)
		b.Run(s, func(b *testing.B) {
			for b.Loop() {
				if err := checkAddr(ip, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
