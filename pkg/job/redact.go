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
// and fragment parameters that carry secrets (IsSecretParam; a fragment
// carries an OAuth implicit grant's access_token). A URL that does not
// parse is redacted as text the same way, as far as its shape allows.
// Secrets in the path (webhook URLs with a token segment) are not
// recognised.
func RedactURL(raw string) string {
	if !mayHoldSecret(raw) {
		return raw // the common case, on every result: no parse, no copy
	}
	u, err := url.Parse(raw)
	if err != nil {
		return redactRaw(raw)
	}
	return redactParsed(u)
}

// mayHoldSecret reports whether raw has userinfo or a parameter with a
// secret name anywhere after its path; false means RedactURL has nothing
// to change.
func mayHoldSecret(raw string) bool {
	if strings.Contains(raw, "@") {
		return true
	}
	i := strings.IndexAny(raw, "?#")
	if i < 0 {
		return false
	}
	return anySecretKey(raw[i+1:], func(r rune) bool { return r == '?' || r == '#' || paramSep(r) })
}

// redactParsed is RedactURL for a parsed URL; u is not changed. Other
// parameters keep their order and encoding.
func redactParsed(u *url.URL) string {
	frag := u.EscapedFragment()
	if u.User == nil && !hasSecretParam(u.RawQuery) && !hasSecretParam(frag) {
		return u.String()
	}
	c := *u
	if c.User != nil {
		c.User = url.User(Redacted)
	}
	c.RawQuery = redactQuery(c.RawQuery)
	if frag != "" {
		c.RawFragment = redactQuery(frag)
		c.Fragment, _ = url.PathUnescape(c.RawFragment)
	}
	return c.String()
}

// redactRaw redacts a URL that does not parse: the userinfo of its
// authority, and secret parameters after "?" and "#".
func redactRaw(raw string) string {
	rest, frag, hasFrag := strings.Cut(raw, "#")
	rest, query, hasQuery := strings.Cut(rest, "?")
	if scheme, after, ok := strings.Cut(rest, "//"); ok {
		authority, path, hasPath := strings.Cut(after, "/")
		if i := strings.LastIndex(authority, "@"); i >= 0 {
			authority = Redacted + authority[i:]
		}
		rest = scheme + "//" + authority
		if hasPath {
			rest += "/" + path
		}
	}
	if hasQuery {
		rest += "?" + redactQuery(query)
	}
	if hasFrag {
		rest += "#" + redactQuery(frag)
	}
	return rest
}

// secretParams are query parameter names whose values are credentials by
// convention (compared without case, "-" and "_"): API keys, OAuth and
// session tokens, passwords, request signatures (AWS, Azure SAS, Google).
var secretParams = []string{
	"key", "auth", "pwd", "sig", "code", "jwt", "sid", "sessionid",
	"signature", "credential", "xamzcredential", "xgoogcredential",
}

// secretSuffixes catch the families of names: api_key, secret_key,
// access_token, private_token, client_secret, password, x-amz-signature.
var secretSuffixes = []string{"key", "token", "secret", "password", "passwd", "signature"}

// IsSecretParam reports whether the value of the query parameter name must
// never be shown.
func IsSecretParam(name string) bool {
	n := strings.Map(func(r rune) rune {
		switch r {
		case '-', '_', '.':
			return -1
		}
		return unicode.ToLower(r)
	}, name)
	if slices.Contains(secretParams, n) {
		return true
	}
	for _, suf := range secretSuffixes {
		if strings.HasSuffix(n, suf) {
			return true
		}
	}
	return false
}

// paramSep splits parameters: "&", and ";" as some servers still take.
func paramSep(r rune) bool { return r == '&' || r == ';' }

func hasSecretParam(rawQuery string) bool { return anySecretKey(rawQuery, paramSep) }

// anySecretKey reports whether a parameter of s, split at sep, has a
// secret name.
func anySecretKey(s string, sep func(rune) bool) bool {
	for _, part := range strings.FieldsFunc(s, sep) {
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

// redactQuery replaces the values of secret parameters, keeping every
// separator and every other byte as it was.
func redactQuery(rawQuery string) string {
	var b strings.Builder
	for rawQuery != "" {
		end := strings.IndexFunc(rawQuery, paramSep)
		part, sep := rawQuery, ""
		if end >= 0 {
			part, sep, rawQuery = rawQuery[:end], rawQuery[end:end+1], rawQuery[end+1:]
		} else {
			rawQuery = ""
		}
		if k, _, ok := strings.Cut(part, "="); ok && isSecretRawParam(k) {
			part = k + "=" + Redacted
		}
		b.WriteString(part + sep)
	}
	return b.String()
}
