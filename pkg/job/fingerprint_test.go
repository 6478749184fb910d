package job

import (
	"strings"
	"testing"
)

// firstID decodes one entry with the given secret headers and returns its id.
func firstID(t *testing.T, line string, secret ...string) string {
	t.Helper()
	d := NewDecoder(strings.NewReader(line), "f.jsonl")
	d.SetSecretHeaders(secret)
	j, err := d.Next()
	if err != nil {
		t.Fatalf("%s: %v", line, err)
	}
	return j.ID
}

// Issue 14 point 6: a derived id hashed the secret headers, so a short API
// key could be found by trying keys against the id. The id must not change
// when only a secret changes.
func TestDerivedIDHasNoSecretMaterial(t *testing.T) {
	cases := []struct {
		name   string
		a, b   string
		secret []string
	}{
		{"Authorization", `{"url":"https://api.example.com/me","headers":{"Authorization":"Bearer 1234"}}`,
			`{"url":"https://api.example.com/me","headers":{"Authorization":"Bearer 9876"}}`, nil},
		{"Cookie, any case", `{"url":"https://api.example.com/me","headers":{"cookie":"s=1"}}`,
			`{"url":"https://api.example.com/me","headers":{"cookie":"s=2"}}`, nil},
		{"JETPOST_REDACT_HEADERS", `{"url":"https://api.example.com/me","headers":{"X-Api-Key":"k1","Accept":"text/plain"}}`,
			`{"url":"https://api.example.com/me","headers":{"X-Api-Key":"k2","Accept":"text/plain"}}`, []string{"x-api-key"}},
		{"secret query parameter", `{"url":"https://api.example.com/me?api_key=1234&page=2"}`,
			`{"url":"https://api.example.com/me?api_key=5678&page=2"}`, nil},
		{"userinfo", `{"url":"https://bob:pw1@api.example.com/me"}`, `{"url":"https://bob:pw2@api.example.com/me"}`, nil},
		{"callback token", `{"url":"https://api.example.com/me","callback":"https://hooks.example.com/cb?token=a"}`,
			`{"url":"https://api.example.com/me","callback":"https://hooks.example.com/cb?token=b"}`, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, b := firstID(t, c.a, c.secret...), firstID(t, c.b, c.secret...)
			if a != b {
				t.Errorf("ids differ when only a secret does: %s and %s", a, b)
			}
		})
	}
}

// A short key cannot be recovered by hashing candidates: every candidate
// gives the same id.
func TestDerivedIDKeySearchFindsNothing(t *testing.T) {
	want := firstID(t, `{"url":"https://api.example.com/me","headers":{"X-Api-Key":"0042"}}`, "X-Api-Key")
	for _, guess := range []string{"0000", "0041", "0042", "9999"} {
		got := firstID(t, `{"url":"https://api.example.com/me","headers":{"X-Api-Key":"`+guess+`"}}`, "X-Api-Key")
		if got != want {
			t.Fatalf("key %s gives id %s, the real key %s: the id depends on the key", guess, got, want)
		}
	}
}

// What is not secret still tells jobs apart, and a line with no secret
// keeps the id it had before secrets were left out (TestDeriveIDPinned pins
// the canonical form), so files enqueued before still match their jobs.
func TestDerivedIDStillDependsOnRequest(t *testing.T) {
	base := firstID(t, `{"url":"https://api.example.com/me","headers":{"Authorization":"a","Accept":"x"}}`)
	for _, other := range []string{
		`{"url":"https://api.example.com/you","headers":{"Authorization":"a","Accept":"x"}}`,
		`{"url":"https://api.example.com/me","headers":{"Authorization":"a","Accept":"y"}}`,
		`{"url":"https://api.example.com/me","headers":{"Accept":"x"}}`, // no credential at all
		`{"method":"POST","url":"https://api.example.com/me","headers":{"Authorization":"a","Accept":"x"}}`,
	} {
		if firstID(t, other) == base {
			t.Errorf("%s: same id as a different request", other)
		}
	}
	if id := firstID(t, `{"url":"http://a/"}`, "X-Api-Key"); id != "h-b1e84d21dec243147d29" {
		t.Errorf("id of a line without secrets changed: %s", id)
	}
}

func mustJob(t *testing.T, line string) *Job {
	t.Helper()
	j, err := NewDecoder(strings.NewReader(line), "f.jsonl").Next()
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func TestFingerprintSameRequest(t *testing.T) {
	base := mustJob(t, `{"id":"1","method":"POST","url":"https://u:p@a.example/x?token=t1&q=1","headers":{"Authorization":"a","X-Key":"k1","Accept":"x"},"data":{"n":1},"callback":"https://cb.example/?sig=1","reply_to":"r.1","timeout":"5s"}`)
	want := base.Fingerprint([]string{"X-Key"}, nil)
	for _, same := range []string{
		// other secrets, header name case, field order, timeout
		`{"timeout":"9s","id":"1","method":"POST","url":"https://v:q@a.example/x?token=t2&q=1","headers":{"authorization":"b","x-key":"k2","accept":"x"},"data":{"n":1},"callback":"https://cb.example/?sig=2","reply_to":"r.1"}`,
		// another id: the fingerprint is the request's alone
		`{"id":"2","method":"POST","url":"https://u:p@a.example/x?token=t1&q=1","headers":{"Authorization":"a","X-Key":"k1","Accept":"x"},"data":{"n":1},"callback":"https://cb.example/?sig=1","reply_to":"r.1"}`,
	} {
		if got := mustJob(t, same).Fingerprint([]string{"X-Key"}, nil); got != want {
			t.Errorf("%s: fingerprint %s, want %s", same, got, want)
		}
	}
}

func TestFingerprintOtherRequest(t *testing.T) {
	lines := []string{
		`{"id":"1","url":"https://a.example/x"}`,
		`{"id":"1","method":"POST","url":"https://a.example/x"}`,
		`{"id":"1","url":"https://a.example/y"}`,
		`{"id":"1","url":"https://a.example/x?q=2"}`,
		`{"id":"1","url":"https://a.example/x","headers":{"Accept":"x"}}`,
		`{"id":"1","url":"https://a.example/x","headers":{"Authorization":"x"}}`, // a credential, whichever
		`{"id":"1","url":"https://a.example/x","data":"a"}`,
		`{"id":"1","url":"https://a.example/x","data":{"a":1}}`,
		`{"id":"1","url":"https://a.example/x","callback":"https://cb.example/"}`,
		`{"id":"1","url":"https://a.example/x","reply_to":"r.1"}`,
		`{"id":"1","url":"https://a.example/x","headers":{"X-Key":"1"}}`,
	}
	seen := map[Fingerprint]string{}
	for _, l := range lines {
		f := mustJob(t, l).Fingerprint(nil, nil)
		if prev, ok := seen[f]; ok {
			t.Errorf("%s and %s have one fingerprint", prev, l)
		}
		seen[f] = l
	}
}

// The fingerprint travels in message ids and markers: it must not depend
// on the value of a header configured secret.
func TestFingerprintConfiguredSecret(t *testing.T) {
	a := mustJob(t, `{"id":"1","url":"https://a.example/x","headers":{"X-Api-Key":"1"}}`)
	b := mustJob(t, `{"id":"1","url":"https://a.example/x","headers":{"X-Api-Key":"2"}}`)
	if a.Fingerprint(nil, nil) == b.Fingerprint(nil, nil) {
		t.Error("X-Api-Key is not secret unless configured: the fingerprints should differ")
	}
	if a.Fingerprint([]string{"x-api-key"}, nil) != b.Fingerprint([]string{"x-api-key"}, nil) {
		t.Error("a configured secret header changed the fingerprint")
	}
}

// With an identity key, credentials are part of the identity through a
// keyed digest: each credential of the same request (header, userinfo,
// secret parameter) makes another fingerprint, another key makes other
// fingerprints, and a request with no secret keeps the fingerprint it has
// without a key, so setting the key leaves those jobs the same.
func TestFingerprintKeyedCredentials(t *testing.T) {
	key, other := []byte("0123456789abcdef"), []byte("fedcba9876543210")
	secret := []string{"X-Key"}
	lines := []string{
		`{"id":"1","url":"https://a.example/x","headers":{"Authorization":"Bearer A"}}`,
		`{"id":"1","url":"https://a.example/x","headers":{"Authorization":"Bearer B"}}`,
		`{"id":"1","url":"https://a.example/x","headers":{"Authorization":"Bearer A","X-Key":"1"}}`,
		`{"id":"1","url":"https://a.example/x","headers":{"Authorization":"Bearer A","X-Key":"2"}}`,
		`{"id":"1","url":"https://u:p@a.example/x","headers":{"Authorization":"Bearer A"}}`,
		`{"id":"1","url":"https://a.example/x?token=1","headers":{"Authorization":"Bearer A"}}`,
		`{"id":"1","url":"https://a.example/x?token=2","headers":{"Authorization":"Bearer A"}}`,
	}
	seen := map[Fingerprint]string{}
	for _, l := range lines {
		j := mustJob(t, l)
		f := j.Fingerprint(secret, key)
		if prev, ok := seen[f]; ok {
			t.Errorf("%s and %s have one keyed fingerprint", prev, l)
		}
		seen[f] = l
		if j.Fingerprint(secret, other) == f {
			t.Errorf("%s: another key gave the same fingerprint", l)
		}
		if j.Fingerprint(secret, key) != f {
			t.Errorf("%s: the keyed fingerprint is not stable", l)
		}
	}
	plain := mustJob(t, `{"id":"1","url":"https://a.example/x?q=1","headers":{"Accept":"x"}}`)
	if plain.Fingerprint(secret, key) != plain.Fingerprint(secret, nil) {
		t.Error("a request without secrets changed fingerprint when the key was set")
	}
}

func BenchmarkFingerprint(b *testing.B) {
	j := &Job{ID: "1", Method: "POST", URL: "https://api.example.com/v1/items?page=2",
		Headers: map[string]string{"Authorization": "Bearer x", "Content-Type": "application/json", "Accept": "application/json"},
		Data:    []byte(`{"name":"item","qty":3,"tags":["a","b"]}`), Callback: "https://cb.example/hook"}
	b.ReportAllocs()
	for b.Loop() {
		_ = j.Fingerprint(nil, nil)
	}
}
