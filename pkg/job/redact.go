package job

import (
	"net/http"
	"net/url"
	"strings"
)

// Redacted is the value shown in place of a secret.
const Redacted = "REDACTED"

// IsSecretHeader reports whether a header's value must never be shown:
// one of the built-in credential headers or one of extra (case-insensitive).
func IsSecretHeader(name string, extra []string) bool {
	// These are always redacted wherever jobs are shown: their values are
	// credentials.
	switch http.CanonicalHeaderKey(name) {
	case "Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie":
		return true
	}
	for _, s := range extra {
		if strings.EqualFold(name, s) {
			return true
		}
	}
	return false
}

// RedactHeaders returns a copy of h with secret values replaced; the job
// itself keeps them (a dead letter must be re-drivable).
func RedactHeaders(h map[string]string, extra []string) map[string]string {
	if len(h) == 0 {
		return h
	}
	out := make(map[string]string, len(h))
	for k, v := range h {
		if IsSecretHeader(k, extra) {
			v = Redacted
		}
		out[k] = v
	}
	return out
}

// RedactURL removes credentials (user:password@) from a URL for display.
// The user name goes too: it is often a token.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	u.User = url.User(Redacted)
	return u.String()
}
