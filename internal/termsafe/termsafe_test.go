package termsafe

import (
	"encoding/json"
	"testing"
)

func TestString(t *testing.T) {
	for in, want := range map[string]string{
		"plain id-1":                     "plain id-1",
		"café 東京 ✓":                      "café 東京 ✓",
		"\x1b[2J\x1b]0;pwned\x07":        `\x1b[2J\x1b]0;pwned\x07`,
		"a\r\nb\tc":                      `a\r\nb\tc`,
		"del\x7f":                        `del\x7f`,
		"csi\u009b31m":                   `csi\u009b31m`, // C1 CSI, as UTF-8
		"invoice\u202egpj.exe":           `invoice\u202egpj.exe`,
		"zero\u200bwidth\u2066iso\u2069": `zero\u200bwidth\u2066iso\u2069`,
		"line\u2028sep":                  `line\u2028sep`,
		"bad\xff\xc3utf8":                `bad\xff\xc3utf8`,
		"tag\U000E0041":                  `tag\U000e0041`,
		`back\slash`:                     `back\slash`,
	} {
		if got := String(in); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
		if got := String(in); !printable(got) {
			t.Errorf("String(%q) = %q still has a character a terminal acts on", in, got)
		}
	}
}

func TestLines(t *testing.T) {
	if got, want := Lines("one\x1b[1m\ntwo\u202e\n"), "one\\x1b[1m\ntwo\\u202e\n"; got != want {
		t.Errorf("Lines = %q, want %q", got, want)
	}
	if s := "a\nb"; Lines(s) != s {
		t.Errorf("Lines(%q) = %q", s, Lines(s))
	}
}

// JSON escapes what encoding/json lets through, and what it escapes
// decodes to the same value.
func TestJSON(t *testing.T) {
	v := map[string]string{"id": "x\u009b2J\u202e\U000E0041 ok é\t", "body": "\x1b[31mred"}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	got := JSON(b)
	if !printable(string(got)) {
		t.Fatalf("JSON left %q", got)
	}
	var back map[string]string
	if err := json.Unmarshal(got, &back); err != nil || back["id"] != v["id"] || back["body"] != v["body"] {
		t.Errorf("JSON(%s) = %s decodes to %q (%v)", b, got, back, err)
	}
	clean := []byte(`{"id":"a","n":1,"s":"é"}`)
	if got := JSON(clean); &got[0] != &clean[0] {
		t.Errorf("JSON copied a text with nothing to escape")
	}
	// Raw bytes of a forged record (not valid JSON) are escaped too.
	if got, want := string(JSON([]byte("{\"id\":\"\x1b[2J\r\xff\"}"))), `{"id":"\u001b[2J\u000d\ufffd"}`; got != want {
		t.Errorf("JSON of raw controls = %s, want %s", got, want)
	}
}

// printable reports whether s is free of every character termsafe escapes
// (tabs allowed, as JSON keeps them).
func printable(s string) bool {
	for _, r := range s {
		if r != '\t' && !safe(r) {
			return false
		}
	}
	return true
}

func BenchmarkStringPlain(b *testing.B) {
	s := "order-2025-11-27-000123 POST https://api.example.com/v1/orders"
	for b.Loop() {
		_ = String(s)
	}
}

// A typical result record, nothing to escape: one scan, no copy.
func BenchmarkJSONRecord(b *testing.B) {
	rec := []byte(`{"id":"h-b1e84d21dec243147d29-2","batch":"2025-11-27_orders","method":"POST","url":"https://api.example.com/v2/orders",` +
		`"source":"in/2025-11-27-orders.jsonl:48213","ok":true,"status":201,"attempts":2,"reason":"",` +
		`"body":"{\"id\":\"ord_8812\",\"status\":\"accepted\",\"note\":\"Zustellung an der Tür\"}","duration_ms":184,"worker":"worker-3f9a"}`)
	b.SetBytes(int64(len(rec)))
	b.ReportAllocs()
	for b.Loop() {
		_ = JSON(rec)
	}
}
