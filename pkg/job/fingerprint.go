package job

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
)

// Fingerprint identifies the request a job sends: a job's identity is its
// id and this fingerprint, so the same id with another request is another
// job. Secret material enters it only through a digest keyed with the
// deployment's identity key (JETPOST_IDENTITY_KEY), never in the clear.
type Fingerprint [16]byte

// String is the fingerprint as 32 lower-case hex digits.
func (f Fingerprint) String() string { return hex.EncodeToString(f[:]) }

// fingerprintVersion starts every fingerprint's input: a change of what is
// hashed must change every fingerprint, not a few by accident.
const fingerprintVersion = "jetpost-fingerprint-1"

// Fingerprint hashes what the job makes a worker do: method, URL, headers,
// body, callback and reply_to. Secrets are not hashed in the clear, so the
// fingerprint (in message ids and completion markers) gives nothing away:
// userinfo and secret query parameters of the URLs (RedactURL) and the
// values of the built-in secret headers and of secretHeaders
// (IsSecretHeader), whose presence still counts. Without a key they are
// left out, and a rotated token is the same job. With a key (at least 16
// bytes, shared by enqueue and every worker) an HMAC of them is hashed
// too: the same request with other credentials is another job, so a job
// of one tenant can never be taken for another's, and nobody without the
// key can test guesses of a credential against a fingerprint. A secret in
// the path or the body is not recognised. The per-attempt timeout, the
// batch and the run are not part of the request.
func (j *Job) Fingerprint(secretHeaders []string, key []byte) Fingerprint {
	// One buffer hashed once: cheaper than feeding a hash.Hash field by
	// field (every result and marker of a worker computes it).
	var buf [1024]byte // most jobs fit: no allocation for the buffer
	b := buf[:0]
	b = field(b, fingerprintVersion)
	b = field(b, j.Method)
	// The URL as sent, params merged: {"url":"…?a=1"} and
	// {"url":"…","params":{"a":1}} are one request.
	target := j.RequestURL()
	u, cb := RedactURL(target), RedactURL(j.Callback)
	b = field(b, u)
	b = headerFields(b, j.Headers, secretHeaders)
	body, ctype := j.Body()
	b = binary.AppendUvarint(b, uint64(len(body)))
	b = append(b, body...)
	b = field(b, ctype)
	b = field(b, cb)
	b = field(b, j.ReplyTo)
	if len(key) > 0 && (u != target || cb != j.Callback || hasSecretHeader(j.Headers, secretHeaders)) {
		b = append(b, j.credentialDigest(target, secretHeaders, key)...)
	}
	sum := sha256.Sum256(b)
	return Fingerprint(sum[:len(Fingerprint{})])
}

// credentialDigest is an HMAC, under the deployment's identity key, of a
// job's secret material: its URLs whole (target is the URL as sent;
// userinfo and secret parameters are in them) and its secret headers,
// sorted by name.
func (j *Job) credentialDigest(target string, secretHeaders []string, key []byte) []byte {
	mac := hmac.New(sha256.New, key)
	var b []byte
	b = field(b, target)
	b = field(b, j.Callback)
	names := make([]string, 0, 4)
	for k := range j.Headers {
		if IsSecretHeader(k, secretHeaders) {
			names = append(names, k)
		}
	}
	slices.SortFunc(names, func(a, b string) int {
		return strings.Compare(http.CanonicalHeaderKey(a), http.CanonicalHeaderKey(b))
	})
	for _, k := range names {
		b = field(b, http.CanonicalHeaderKey(k))
		b = field(b, j.Headers[k])
	}
	mac.Write(b)
	return mac.Sum(nil)
}

func hasSecretHeader(headers map[string]string, secretHeaders []string) bool {
	for k := range headers {
		if IsSecretHeader(k, secretHeaders) {
			return true
		}
	}
	return false
}

// headerFields appends the headers sorted by canonical name (HTTP names
// are case-insensitive), secret values replaced by Redacted.
func headerFields(b []byte, headers map[string]string, secret []string) []byte {
	type kv struct{ k, v string }
	var small [16]kv
	list := small[:0]
	for k, v := range headers {
		if IsSecretHeader(k, secret) {
			v = Redacted
		}
		list = append(list, kv{http.CanonicalHeaderKey(k), v})
	}
	slices.SortFunc(list, func(a, b kv) int {
		if c := strings.Compare(a.k, b.k); c != 0 {
			return c
		}
		return strings.Compare(a.v, b.v)
	})
	b = binary.AppendUvarint(b, uint64(len(list)))
	for _, e := range list {
		b = field(b, e.k)
		b = field(b, e.v)
	}
	return b
}

// field appends s length-prefixed, so no two field sequences hash alike.
func field(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// identityFields is an entry's fields as its derived id sees them: the
// values of secret headers and the secrets of its URLs replaced as in
// Fingerprint, so a derived id (logged, and sent as an idempotency key)
// gives no credential away and stays the same when only one changes. An
// entry with no secret is returned as it is, so its id is what it always
// was.
func identityFields(fields map[string]any, secretHeaders []string) map[string]any {
	var out map[string]any // a copy, made at the first change
	set := func(name string, v any) {
		if out == nil {
			out = maps.Clone(fields)
		}
		out[name] = v
	}
	for _, name := range []string{fieldURL, fieldCallback} {
		if s, ok := fields[name].(string); ok {
			if r := RedactURL(s); r != s {
				set(name, r)
			}
		}
	}
	if hs, ok := fields[fieldHeaders].(map[string]any); ok {
		if red, changed := redactHeaderFields(hs, secretHeaders); changed {
			set(fieldHeaders, red)
		}
	}
	if ps, ok := fields[fieldParams].(map[string]any); ok {
		if red, changed := redactParamFields(ps); changed {
			set(fieldParams, red)
		}
	}
	if out == nil {
		return fields
	}
	return out
}

// redactHeaderFields returns headers with secret values replaced, and
// whether there were any.
func redactHeaderFields(hs map[string]any, secret []string) (map[string]any, bool) {
	var out map[string]any
	for k := range hs {
		if !IsSecretHeader(k, secret) {
			continue
		}
		if out == nil {
			out = maps.Clone(hs)
		}
		out[k] = Redacted
	}
	return out, out != nil
}

// redactParamFields returns params with the values of secret names
// (IsSecretParam, as in URLs) replaced, and whether there were any.
func redactParamFields(ps map[string]any) (map[string]any, bool) {
	var out map[string]any
	for k := range ps {
		if IsSecretParam(k) {
			if out == nil {
				out = maps.Clone(ps)
			}
			out[k] = Redacted
		}
	}
	return out, out != nil
}

// SetSecretHeaders names the headers, besides the built-in ones, whose
// values derived ids must not depend on (JETPOST_REDACT_HEADERS). Call it
// before the first Next.
func (d *Decoder) SetSecretHeaders(names []string) { d.secretHeaders = names }

// MarshalText writes the fingerprint as hex, as it is stored in markers.
func (f Fingerprint) MarshalText() ([]byte, error) { return hex.AppendEncode(nil, f[:]), nil }

// UnmarshalText reads MarshalText's form; empty is the zero fingerprint.
func (f *Fingerprint) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*f = Fingerprint{}
		return nil
	}
	if len(b) != 2*len(f) {
		return fmt.Errorf("fingerprint %q: want %d hex digits", b, 2*len(f))
	}
	_, err := hex.Decode(f[:], b)
	return err
}
