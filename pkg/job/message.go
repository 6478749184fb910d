package job

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// Wire-only fields: a job message carries them besides the fields of a
// file entry. enqueue sets them; another producer may, and the worker
// fills what is missing (DecodeMessage).
const (
	wireBatch      = "batch"
	wireEnqueuedAt = "enqueued_at"
	wireRedrive    = "redrive"
	wireRate       = "rate"
	wireSource     = "source"
	wireKind       = "kind"
	wireResult     = "result"
)

func isWireOnly(name string) bool {
	switch name {
	case wireBatch, wireEnqueuedAt, wireRedrive, wireRate, wireSource, wireKind, wireResult:
		return true
	}
	return false
}

// wireFields reads the wire-only fields of a message decoded with
// UseNumber (obj is the message, for the bytes of "result"). Types are
// held to what encoding/json would accept for Job's fields; null counts as
// absent, as in a file entry.
func wireFields(all map[string]any, obj []byte) (*Job, error) {
	var w Job
	var err error
	str := func(name string, dst *string) {
		if v := all[name]; v != nil && err == nil {
			*dst, err = stringField(name, v)
		}
	}
	str(wireBatch, &w.Batch)
	str(wireSource, &w.Source)
	str(wireKind, &w.Kind)
	var at string
	str(wireEnqueuedAt, &at)
	if err == nil && at != "" {
		if e := w.EnqueuedAt.UnmarshalText([]byte(at)); e != nil {
			err = fmt.Errorf("%s: %w", wireEnqueuedAt, e)
		}
	}
	if err == nil {
		err = numberField(all, wireRedrive, func(n json.Number) (e error) { w.Redrive, e = strconv.Atoi(string(n)); return e })
	}
	if err == nil {
		err = numberField(all, wireRate, func(n json.Number) (e error) { w.Rate, e = n.Float64(); return e })
	}
	if err == nil && all[wireResult] != nil {
		w.Result = new(Result)
		if e := json.Unmarshal(rawField(obj, wireResult), w.Result); e != nil {
			err = fmt.Errorf("%s: %w", wireResult, e)
		}
	}
	return &w, err
}

// numberField passes the number of field name, if set, to set.
func numberField(all map[string]any, name string, set func(json.Number) error) error {
	v := all[name]
	if v == nil {
		return nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return fmt.Errorf("%s: must be a number, got %s", name, kindOf(v))
	}
	if err := set(n); err != nil {
		return fmt.Errorf("%s: %s: %w", name, quote(string(n)), err)
	}
	return nil
}

// DecodeMessage decodes a job message delivered on the job subject of
// batch, whoever published it, with the rules enqueue applies to a file
// entry: the same fields, defaults (method GET), normalisation (method
// upper-cased), errors (unknown fields, wrong types, invalid UTF-8) and
// limits (Validate). What a file cannot say comes from the message: the
// batch is the subject's, and a "batch" in the body must agree with it; a
// missing id is the one enqueue derives for the same entry as the first
// of its content in a file (secretHeaders as for Decoder). A missing
// enqueued_at is left zero for the caller, who knows when it was stored.
func DecodeMessage(b []byte, batch string, secretHeaders []string) (*Job, error) {
	if !ValidBatch(batch) {
		return nil, fmt.Errorf("invalid job message: the subject's batch %s is not a valid batch id", quote(batch))
	}
	if !utf8.Valid(b) {
		return nil, errors.New("invalid job message: invalid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("decoding job: %w", err)
	}
	all, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("decoding job: expected a JSON object, got %s", kindOf(v))
	}
	if !isBlank(b[dec.InputOffset():]) {
		return nil, errors.New("decoding job: unexpected data after the JSON object")
	}
	w, err := wireFields(all, b)
	if err != nil {
		return nil, fmt.Errorf("decoding job: %w", err)
	}
	fields := make(map[string]any, len(all))
	for k, v := range all {
		if !isWireOnly(k) {
			fields[k] = v
		}
	}
	j, err := jobFromFields(fields, b)
	if err != nil {
		return nil, fmt.Errorf("invalid job %s: %w", quote(idOf(fields)), err)
	}
	if w.Batch != "" && w.Batch != batch {
		return j, fmt.Errorf("invalid job %s: it names batch %s but was published for batch %s", quote(j.ID), quote(w.Batch), quote(batch))
	}
	j.Batch, j.EnqueuedAt, j.Redrive, j.Rate, j.Source, j.Kind, j.Result = batch, w.EnqueuedAt, w.Redrive, w.Rate, w.Source, w.Kind, w.Result
	if j.Kind == KindCallback && fields[fieldMethod] == nil {
		j.Method = "" // a callback message sends no request of its own
	}
	if j.ID == "" {
		k, err := canonicalKey(identityFields(fields, secretHeaders))
		if err != nil {
			return j, err
		}
		j.ID = formatDerived(k, 1)
	}
	if err := j.Validate(); err != nil {
		return j, fmt.Errorf("invalid job %s: %w", quote(j.ID), err)
	}
	return j, nil
}

// idOf is the id a message claims, for an error about it.
func idOf(fields map[string]any) string {
	s, _ := fields[fieldID].(string)
	return Cut(s, 64)
}
