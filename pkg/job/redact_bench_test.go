package job

import "testing"

// A URL with ordinary query parameters: every name is checked, none is
// secret, so nothing is parsed or copied.
func BenchmarkRedactURLQueryNoSecret(b *testing.B) {
	const u = "https://api.example.com/v2/orders?page=2&per_page=100&sort=created_at&customer[id]=17&filter.status=open"
	b.ReportAllocs()
	for b.Loop() {
		if RedactURL(u) != u {
			b.Fatal("changed")
		}
	}
}

// A URL with a secret: parsed and rebuilt.
func BenchmarkRedactURLQuerySecret(b *testing.B) {
	const u = "https://api.example.com/v2/orders?page=2&api_key=k-0123456789&sort=created_at"
	b.ReportAllocs()
	for b.Loop() {
		_ = RedactURL(u)
	}
}

func BenchmarkIsSecretParam(b *testing.B) {
	names := []string{"page", "per_page", "sort", "customer", "id", "filter", "status", "utm_source", "createdAfter"}
	b.ReportAllocs()
	for b.Loop() {
		for _, n := range names {
			if IsSecretParam(n) {
				b.Fatal(n)
			}
		}
	}
}
