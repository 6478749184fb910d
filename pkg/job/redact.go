package job

import (
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"
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

// IsSecretParam reports whether the value of the query parameter name must
// never be shown. The rule, case-insensitive, applies to each part of a
// structured name ("user[password]", "data.password", "a[b][c]"); a part
// is secret when
//
//   - it contains one of secretFragments, its words run together
//     ("new-password", "X-Amz-Credential", "accessToken", "PHPSESSID");
//   - one of its words is one of secretWords ("api_key", "apiKey", "sig",
//     "auth_code", "key1"); words are split at "-", "_", spaces, digits and
//     camelCase humps;
//   - it ends with one of secretSuffixes, for names run together in lower
//     case ("apikey", "secretkey", "basicauth", "userpwd");
//   - it is exactly "code" (an OAuth authorization code; "zip_code" is not).
//
// It errs on the side of hiding: "monkey" and "token_type" are hidden, which
// costs a reader a value, where the other way costs a credential.
func IsSecretParam(name string) bool {
	start := 0
	for i := 0; i <= len(name); i++ {
		if i < len(name) && name[i] != '[' && name[i] != ']' && name[i] != '.' {
			continue
		}
		if i > start && secretPart(name[start:i]) {
			return true
		}
		start = i + 1
	}
	return false
}

// secretFragments are secret wherever they occur in a name.
var secretFragments = []string{
	"password", "passwd", "passphrase", "passcode", "secret", "token", "credential",
	"session", "sessid", "signature", "cookie", "authorization", "authenticat", "apikey",
}

// hasSecretFragment reports whether c contains one of secretFragments: one
// pass over c, trying only the fragments that start with the byte at hand.
func hasSecretFragment(c string) bool {
	for i := 0; i < len(c); i++ {
		if !isLower(c[i]) || fragmentStarts&(1<<(c[i]-'a')) == 0 {
			continue
		}
		for _, f := range secretFragments {
			if f[0] == c[i] && strings.HasPrefix(c[i:], f) {
				return true
			}
		}
	}
	return false
}

// fragmentStarts has bit b set when a fragment starts with 'a'+b.
const fragmentStarts = 1 /* a */ | 1<<('c'-'a') | 1<<('p'-'a') | 1<<('s'-'a') | 1<<('t'-'a')

// secretWords are secret as a word of a name; inside a word they are too
// often something else ("keyword", "author", "design", "inside").
var secretWords = []string{"key", "auth", "pwd", "pass", "sig", "sid", "jwt", "otp", "pin", "hmac"}

// secretSuffixes end names run together in lower case.
var secretSuffixes = []string{"key", "auth", "pwd", "sig"}

// maxNameLen bounds the part of a name that is examined without an
// allocation; a longer part is examined whole, at the cost of a copy.
const maxNameLen = 64

// secretPart applies IsSecretParam's rule to one part of a name. Words
// are runs of letters (split where a lower-case letter meets an upper-case
// one, and before the last capital of a run followed by a lower-case
// letter: "APIKey" is "API", "Key") or of digits; anything else separates
// them.
func secretPart(part string) bool {
	var buf [maxNameLen]byte
	compact := buf[:0] // the words run together, in lower case
	start := -1        // of the current word
	for i := 0; i <= len(part); i++ {
		inWord := i < len(part) && isWordByte(part[i])
		if inWord && start >= 0 && !wordBreak(part, i) {
			compact = append(compact, lower(part[i]))
			continue
		}
		if start >= 0 && isSecretWord(part[start:i]) {
			return true
		}
		start = -1
		if inWord {
			start = i
			compact = append(compact, lower(part[i]))
		}
	}
	c := string(compact) // does not escape: no allocation for a short name
	if c == "code" || hasSecretFragment(c) {
		return true
	}
	for _, suf := range secretSuffixes {
		if strings.HasSuffix(c, suf) {
			return true
		}
	}
	return false
}

func isSecretWord(w string) bool {
	if len(w) < 3 || len(w) > 4 { // the lengths of secretWords
		return false
	}
	for _, sw := range secretWords {
		if strings.EqualFold(w, sw) {
			return true
		}
	}
	return false
}

// wordBreak reports whether a new word starts at s[i], given s[i-1] is in
// a word.
func wordBreak(s string, i int) bool {
	prev, c := s[i-1], s[i]
	switch {
	case isDigit(prev) != isDigit(c):
		return true
	case isUpper(c) && isLower(prev):
		return true
	case isUpper(c) && isUpper(prev) && i+1 < len(s) && isLower(s[i+1]):
		return true
	}
	return false
}

// isWordByte is a letter, a digit, or a byte of a non-ASCII character.
func isWordByte(c byte) bool {
	return isLower(c) || isUpper(c) || isDigit(c) || c >= utf8.RuneSelf
}

func isLower(c byte) bool { return 'a' <= c && c <= 'z' }
func isUpper(c byte) bool { return 'A' <= c && c <= 'Z' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func lower(c byte) byte {
	if isUpper(c) {
		return c + 'a' - 'A'
	}
	return c
}

// paramSep splits parameters: "&", and ";" as some servers still take.
func paramSep(r rune) bool { return r == '&' || r == ';' }

func hasSecretParam(rawQuery string) bool { return anySecretKey(rawQuery, paramSep) }

// anySecretKey reports whether a parameter of s, split at sep, has a
// secret name.
func anySecretKey(s string, sep func(rune) bool) bool {
	for s != "" {
		part := s
		if end := strings.IndexFunc(s, sep); end >= 0 {
			part, s = s[:end], s[end+1:]
		} else {
			s = ""
		}
		if k, _, _ := strings.Cut(part, "="); k != "" && isSecretRawParam(k) {
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
