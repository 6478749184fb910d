package job

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"unicode"
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

// RedactURL removes credentials from a URL for display: user:password@
// (the user name goes too: it is often a token) and the values of query
// parameters that carry secrets (IsSecretParam). A URL that does not parse
// is returned as it is: it was never sent.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return raw
	}
	return RedactedURL(u)
}

// RedactedURL is RedactURL for a parsed URL; u is not changed. Other query
// parameters keep their order and encoding.
func RedactedURL(u *url.URL) string {
	if u.User == nil && !hasSecretParam(u.RawQuery) {
		return u.String()
	}
	c := *u
	if c.User != nil {
		c.User = url.User(Redacted)
	}
	c.RawQuery = redactQuery(c.RawQuery)
	return c.String()
}

// secretParams are query parameter names whose values are credentials by
// convention (compared without case, "-" and "_"): API keys, OAuth and
// session tokens, passwords, request signatures (AWS, Azure SAS, Google).
var secretParams = []string{
	"apikey", "key", "accesskey", "secret", "clientsecret", "token",
	"accesstoken", "refreshtoken", "idtoken", "authtoken", "sessiontoken",
	"auth", "password", "passwd", "pwd", "sig", "signature",
	"xamzsignature", "xamzsecuritytoken", "xamzcredential", "xgoogsignature",
	"xgoogcredential", "code",
}

// IsSecretParam reports whether the value of the query parameter name must
// never be shown.
func IsSecretParam(name string) bool {
	n := strings.Map(func(r rune) rune {
		switch r {
		case '-', '_':
			return -1
		}
		return unicode.ToLower(r)
	}, name)
	return slices.Contains(secretParams, n)
}

func hasSecretParam(rawQuery string) bool {
	for part := range strings.SplitSeq(rawQuery, "&") {
		if k, _, _ := strings.Cut(part, "="); isSecretRawParam(k) {
			return true
		}
	}
	return false
}

func isSecretRawParam(rawName string) bool {
	name, err := url.QueryUnescape(rawName)
	if err != nil {
		name = rawName
	}
	return IsSecretParam(name)
}

func redactQuery(rawQuery string) string {
	if rawQuery == "" {
		return ""
	}
	parts := strings.Split(rawQuery, "&")
	for i, part := range parts {
		if k, _, ok := strings.Cut(part, "="); ok && isSecretRawParam(k) {
			parts[i] = k + "=" + Redacted
		}
	}
	return strings.Join(parts, "&")
}
