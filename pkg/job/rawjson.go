package job

import "encoding/json"

// rawField returns the bytes of the value of name in obj, a JSON object that
// encoding/json has already accepted, or nil. Like encoding/json, the last of
// duplicate names wins. It exists so that one parse into interface values can
// serve everything while "data" still keeps the bytes the user wrote.
func rawField(obj []byte, name string) []byte {
	var found []byte
	i := skipSpaces(obj, 0) + 1 // past '{'
	for {
		i = skipSpaces(obj, i)
		if i >= len(obj) || obj[i] != '"' {
			return found // '}': the end
		}
		keyEnd := valueEnd(obj, i)
		key := obj[i:keyEnd]
		i = skipSpaces(obj, keyEnd) + 1 // past ':'
		i = skipSpaces(obj, i)
		end := valueEnd(obj, i)
		if keyIs(key, name) {
			found = obj[i:end]
		}
		i = skipSpaces(obj, end)
		if i < len(obj) && obj[i] == ',' {
			i++
		}
	}
}

// keyIs compares a quoted key with name, unescaping only when the key has
// escapes ("d\u0061ta" is "data" too).
func keyIs(quoted []byte, name string) bool {
	inner := quoted[1 : len(quoted)-1]
	for _, c := range inner {
		if c == '\\' {
			var s string
			return json.Unmarshal(quoted, &s) == nil && s == name
		}
	}
	return string(inner) == name
}

func skipSpaces(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// valueEnd returns the index just past the valid JSON value starting at i.
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		for i++; i < len(b); i++ {
			switch b[i] {
			case '\\':
				i++
			case '"':
				return i + 1
			}
		}
		return len(b)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				i = valueEnd(b, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
		}
		return len(b)
	}
	for ; i < len(b); i++ {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
	}
	return i
}

// WithRawField returns obj, a JSON object as encoding/json wrote it, with
// the member name: raw appended, raw kept byte for byte. encoding/json
// compacts and HTML-escapes a json.RawMessage it marshals, which would
// change a body an API signs or compares ("<" becomes "\u003c"). raw must be
// valid JSON; name a plain key (no quote, backslash or control character)
// not in obj already. obj's storage is reused: do not use obj afterwards.
func WithRawField(obj []byte, name string, raw []byte) []byte {
	out := obj[:len(obj)-1] // without its '}'
	if len(obj) > 2 {
		out = append(out, ',')
	}
	out = append(out, '"')
	out = append(out, name...)
	out = append(out, '"', ':')
	out = append(out, raw...)
	return append(out, '}')
}
