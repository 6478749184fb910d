package config

import (
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/jetpost/jetpost/pkg/job"
)

// variable is one JETPOST_* variable of a spec: its key (named by
// envconfig's rules, the same that render -h and the README) and the Go
// field it fills.
type variable struct {
	key, field, def string
}

// variables lists spec's variables. The keys come from envconfig itself,
// so what is loaded is exactly what is documented.
func variables(spec any) ([]variable, error) {
	var b strings.Builder
	if err := envconfig.Usagef(Prefix, spec, &b, "{{range .}}{{.Name}} {{usage_key .}}\n{{end}}"); err != nil {
		return nil, err
	}
	t := reflect.TypeOf(spec).Elem()
	var vs []variable
	for line := range strings.Lines(b.String()) {
		field, key, _ := strings.Cut(strings.TrimSpace(line), " ")
		sf, ok := t.FieldByName(field)
		if !ok {
			return nil, fmt.Errorf("config: no field %s in %s", field, t)
		}
		vs = append(vs, variable{key: key, field: field, def: sf.Tag.Get("default")})
	}
	return vs, nil
}

// process fills spec from lookup: a variable set (even to "") wins over
// its default; one unset and without a default leaves the zero value.
func process(spec any, lookup func(string) (string, bool)) error {
	vs, err := variables(spec)
	if err != nil {
		return err
	}
	v := reflect.ValueOf(spec).Elem()
	for _, va := range vs {
		value, ok := lookup(va.key)
		if !ok {
			if va.def == "" {
				continue
			}
			value = va.def
		}
		if err := setField(v.FieldByName(va.field), value); err != nil {
			return fmt.Errorf("%s=%q: %w", va.key, value, err)
		}
	}
	return nil
}

var durationType = reflect.TypeFor[time.Duration]()

// setField parses value into f, by f's type.
func setField(f reflect.Value, value string) error {
	if f.Type() == durationType {
		d, err := ParseDuration(value)
		f.SetInt(int64(d))
		return err
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(value)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(value), 10, f.Type().Bits())
		if err != nil {
			return errors.New("not a whole number")
		}
		f.SetInt(n)
	case reflect.Uint32:
		n, err := strconv.ParseUint(strings.TrimSpace(value), 10, 32)
		if err != nil {
			return errors.New("not a whole number from 0 to 4294967295")
		}
		f.SetUint(n)
	case reflect.Float64:
		x, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil || math.IsNaN(x) || math.IsInf(x, 0) {
			return errors.New("not a number")
		}
		f.SetFloat(x)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(value))
		if err != nil {
			return errors.New("use true or false")
		}
		f.SetBool(b)
	default:
		return fmt.Errorf("config: no parser for %s", f.Type())
	}
	return nil
}

// ParseDuration reads a duration the way job files do: a number of
// seconds ("30", "1.5") or a Go duration ("30s", "1m30s", "168h").
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if secs, err := strconv.ParseFloat(s, 64); err == nil {
		if math.IsNaN(secs) || math.IsInf(secs, 0) || math.Abs(secs) > math.MaxInt64/float64(time.Second) {
			return 0, errors.New("out of range")
		}
		return time.Duration(secs * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, errors.New(`not a duration: use seconds ("30") or a unit ("30s", "1m30s", "2h")`)
	}
	return d, nil
}

// Names is every JETPOST_* variable any command reads (the worker's are a
// superset of enqueue's).
func Names() []string {
	vs, err := variables(&Worker{})
	if err != nil {
		panic(err) // the struct tags are constants: covered by the tests
	}
	names := make([]string, len(vs))
	for i, v := range vs {
		names[i] = v.key
	}
	return names
}

// OtherVariables are the JETPOST_* names the repository uses that no
// command reads, so that no command warns about them: the passwords
// examples/nats-permissions.conf has the NATS server read. Tests,
// benchmarks and scripts set no variable of their own (a test keeps this
// list complete: a new one must be added here).
func OtherVariables() []string {
	return []string{"JETPOST_WORKER_PASSWORD", "JETPOST_PRODUCER_PASSWORD", "JETPOST_RESULTS_PASSWORD", "JETPOST_ADMIN_PASSWORD", "JETPOST_CONSOLE_PASSWORD"}
}

// Unknown is a JETPOST_* variable no command reads, and the known name
// closest to it.
type Unknown struct{ Name, Closest string }

func (u Unknown) String() string {
	return fmt.Sprintf("%s is not a jetpost variable and is ignored (did you mean %s?)", u.Name, u.Closest)
}

// UnknownVariables lists the JETPOST_* variables of environ ("KEY=value"
// entries, as os.Environ) that no command reads: likely typos.
func UnknownVariables(environ []string) []Unknown {
	known := Names()
	var out []Unknown
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, Prefix+"_") || slices.Contains(known, name) || slices.Contains(OtherVariables(), name) {
			continue
		}
		out = append(out, Unknown{Name: name, Closest: closest(name, known)})
	}
	return out
}

// WarnUnknown writes a line per unknown JETPOST_* variable of the process
// environment to warn.
func WarnUnknown(warn func(string)) {
	for _, u := range UnknownVariables(os.Environ()) {
		warn(u.String())
	}
}

// closest is the name in known at the smallest edit distance from name.
func closest(name string, known []string) string {
	best, bestD := "", math.MaxInt
	for _, k := range known {
		if d := job.EditDistance(name, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}
