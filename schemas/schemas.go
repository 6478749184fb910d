// Package schemas holds the JSON Schemas (draft 2020-12) of jetpost's wire
// format, the contract producers and consumers in any language program
// against: the job message (job-message.schema.json), the result record
// (result.schema.json) and the dead letter (dead-letter.schema.json). The
// files are the documentation; this package embeds them so that tests hold
// what the code emits and accepts to them.
package schemas

import (
	"bytes"
	"embed"
	"fmt"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

//go:embed *.schema.json
var files embed.FS

// Base is the URL the schemas' $id are under; their references are
// relative to it.
const Base = "https://github.com/jetpost/jetpost/schemas/"

// File names of the schemas.
const (
	JobMessage = "job-message.schema.json"
	Result     = "result.schema.json"
	DeadLetter = "dead-letter.schema.json"
)

// Validator checks documents against the schemas.
type Validator struct {
	compiled map[string]*jsonschema.Schema
}

// New compiles the embedded schemas, formats asserted ("date-time" is
// checked, not only noted), with nothing fetched from the network.
func New() (*Validator, error) {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	names := []string{JobMessage, Result, DeadLetter}
	for _, name := range names {
		b, err := files.ReadFile(name)
		if err != nil {
			return nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
		if err := c.AddResource(Base+name, doc); err != nil {
			return nil, fmt.Errorf("schema %s: %w", name, err)
		}
	}
	v := &Validator{compiled: make(map[string]*jsonschema.Schema, len(names))}
	for _, name := range names {
		s, err := c.Compile(Base + name)
		if err != nil {
			return nil, fmt.Errorf("compiling schema %s: %w", name, err)
		}
		v.compiled[name] = s
	}
	return v, nil
}

// Validate checks the JSON document data against the schema named (one of
// JobMessage, Result, DeadLetter).
func (v *Validator) Validate(name string, data []byte) error {
	s, ok := v.compiled[name]
	if !ok {
		return fmt.Errorf("no schema %q", name)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("%s: not JSON: %w", name, err)
	}
	if err := s.Validate(doc); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
