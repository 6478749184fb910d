package main

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/jetpost/jetpost/internal/termsafe"
	"github.com/jetpost/jetpost/pkg/job"
)

// runShow prints result records (JSON Lines, as written by --out) as a
// table a person can read.
func runShow(args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) != 1 {
		return &exitError{exitUsage, errors.New("usage: enqueue show RESULTS.jsonl | -")}
	}
	in := stdin
	if args[0] != "-" {
		f, err := os.Open(args[0])
		if err != nil {
			return &exitError{exitUsage, err}
		}
		defer f.Close()
		in = f
	}
	tw := tabwriter.NewWriter(stdout, 1, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSOURCE\tREQUEST\tOK\tSTATUS\tATTEMPTS\tMS\tREASON\tERROR / BODY")
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	line := 0
	for sc.Scan() {
		line++
		if len(strings.TrimSpace(sc.Text())) == 0 {
			continue
		}
		r, err := decodeShownResult(sc.Bytes())
		if err != nil {
			return &exitError{exitUsage, fmt.Errorf("%s is not a results file: line %d %w; enqueue show reads the JSON Lines that enqueue --wait --out and enqueue results write", args[0], line, err)}
		}
		detail := r.Error
		if detail == "" {
			detail = r.Body
		}
		var notes []string
		if r.BodyTruncated {
			notes = append(notes, "body truncated")
		}
		if r.Callback != nil {
			if r.Callback.OK {
				notes = append(notes, fmt.Sprintf("callback %d", r.Callback.Status))
			} else {
				notes = append(notes, "callback failed: "+r.Callback.Error)
			}
		}
		if len(notes) > 0 {
			detail = "[" + strings.Join(notes, "; ") + "] " + detail
		}
		request := "-"
		if r.URL != "" {
			// Redacted again: the file may come from an older version, whose
			// rule knew fewer secret parameter names.
			request = clip(oneLine(r.Method+" "+job.RedactURL(r.URL)), 60)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%d\t%d\t%d\t%s\t%s\n", oneLine(r.ID), cmp.Or(oneLine(r.Source), "-"), request,
			r.OK, r.Status, r.Attempts, r.DurationMS, oneLine(string(r.Reason)), clip(oneLine(detail), 70))
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return tw.Flush()
}

// decodeShownResult decodes a line of a results file, or says what the line
// is instead (the mistake is usually giving show the job file).
func decodeShownResult(b []byte) (*job.Result, error) {
	if bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
		return nil, errors.New("is gzip-compressed data (decompress it: zcat FILE | enqueue show -)")
	}
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(b, &keys); err != nil {
		if t := bytes.TrimSpace(b); len(t) > 0 && t[0] == '[' {
			return nil, errors.New("is a JSON array (a job file?), not a JSON object per line")
		}
		return nil, errors.New("is not a JSON object")
	}
	_, hasOK := keys["ok"]
	_, hasAttempts := keys["attempts"]
	_, hasID := keys["id"]
	if !hasOK || !hasAttempts || !hasID {
		if _, ok := keys["url"]; ok {
			return nil, errors.New("is a job (a request to send), not its result")
		}
		return nil, errors.New(`is not a result record (a result has "id", "ok" and "attempts")`)
	}
	r, err := job.DecodeResult(b)
	if err != nil {
		return nil, fmt.Errorf("is not a valid result record (%w)", err)
	}
	return r, nil
}

// oneLine makes text from a record fit a table cell: white space runs
// become one space, and whatever a terminal would act on is shown escaped
// (internal/termsafe).
func oneLine(s string) string {
	return termsafe.String(strings.Join(strings.Fields(s), " "))
}

func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
