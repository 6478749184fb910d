package hostlimit

import (
	"math/rand/v2"
	"regexp"
	"testing"
	"time"
)

func TestGrantFreshBucketGivesTheBurst(t *testing.T) {
	r := Rate{PerSecond: 100, Burst: 10}
	now := int64(1e18)
	tat, n, _ := grant(0, now, r, 50)
	if n != 10 {
		t.Fatalf("fresh bucket granted %d of 50, want the burst 10", n)
	}
	_, n, wait := grant(tat, now, r, 1)
	if n != 0 || wait != 10*time.Millisecond {
		t.Fatalf("empty bucket: granted %d, wait %v; want 0 and one interval (10ms)", n, wait)
	}
	_, n, _ = grant(tat, now+int64(25*time.Millisecond), r, 50)
	if n != 2 {
		t.Fatalf("after 25ms granted %d, want 2", n)
	}
}

// Whatever the pattern of requests from however many takers, the tokens
// granted over any span never exceed rate × span + burst.
func TestGrantNeverExceedsRatePlusBurst(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	for _, r := range []Rate{{PerSecond: 100, Burst: 10}, {PerSecond: 7}, {PerSecond: 0.5, Burst: 3}, {PerSecond: 5000}} {
		var tat int64
		start := int64(1e18)
		now := start
		var granted []int64 // grant times, one per token
		for range 20000 {
			now += rnd.Int64N(int64(r.Interval()) * 3)
			var n int
			tat, n, _ = grant(tat, now, r, 1+rnd.IntN(20))
			for range n {
				granted = append(granted, now)
			}
		}
		// Sliding windows starting at each grant (two pointers per span).
		burst := float64(r.EffectiveBurst())
		for _, span := range []int64{int64(time.Second), int64(10 * time.Second)} {
			j := 0
			for i := range granted {
				for j < len(granted) && granted[j]-granted[i] <= span {
					j++
				}
				if limit := r.PerSecond*float64(span)/1e9 + burst; float64(j-i) > limit+1e-9 {
					t.Fatalf("%v: %d tokens within %v, limit %.1f", r, j-i, time.Duration(span), limit)
				}
			}
		}
		total := float64(len(granted))
		if want := r.PerSecond * float64(now-start) / 1e9; total < 0.4*want {
			t.Fatalf("%v: granted only %.0f of about %.0f", r, total, want)
		}
	}
}

func TestKeysAreValidKVKeys(t *testing.T) {
	valid := regexp.MustCompile(`^[-/_=.a-zA-Z0-9]+$`)
	for _, k := range []string{
		hostKey("api.example.com:443"), hostKey("[2001:db8::1]:8080"), hostKey("a..b:80"),
		batchKey("Batch_1-x", "api.example.com:443"),
	} {
		if !valid.MatchString(k) {
			t.Errorf("key %q has characters a KV key cannot", k)
		}
		for i := 1; i < len(k); i++ {
			if k[i] == '.' && k[i-1] == '.' {
				t.Errorf("key %q has an empty token", k)
			}
		}
	}
	if hostKey("a.com:443") == hostKey("a=2Ecom:443") {
		t.Error("escaping is ambiguous")
	}
}

func TestTATRoundTrip(t *testing.T) {
	if got := parseTAT(formatTAT(1234567890123)); got != 1234567890123 {
		t.Fatalf("round trip gave %d", got)
	}
	if parseTAT(nil) != 0 || parseTAT([]byte("garbage")) != 0 {
		t.Fatal("absent or unreadable state must read as a full bucket")
	}
}
