package job

import (
	"fmt"
	"strings"
	"time"
)

// Policy is what a deployment lets a job ask of it beyond a valid request:
// where its result may be copied (reply_to) and how long one attempt may
// hold a request place (timeout). enqueue checks it on every line and the
// worker again on every message, from the same variables, so a message
// published straight onto the jobs subject gets no more than a file.
type Policy struct {
	// ReplyPrefixes are the subjects reply_to may name: a prefix itself or
	// any subject under it; ">" stands for every subject. None: reply_to is
	// refused. Reserved subjects (ReservedSubject) are refused whatever
	// the prefixes say.
	ReplyPrefixes []string
	// SubjectPrefix is the deployment's own first subject token (jobs,
	// results, dead letters): never a reply_to target. Empty: "jetpost".
	SubjectPrefix string
	// MaxTimeout is the ceiling of a job's per-attempt timeout; 0 means
	// DefaultMaxTimeout.
	MaxTimeout time.Duration
}

// DefaultMaxTimeout is the per-attempt timeout ceiling when none is set: long
// enough for a slow report endpoint, short enough that a few files cannot pin
// every request place of every worker for hours.
const DefaultMaxTimeout = 5 * time.Minute

// MaxTimeout bounds every timeout that can be written (either form), and so
// any ceiling a deployment may configure.
const MaxTimeout = 24 * time.Hour

// Check reports why j asks for more than p allows, or nil.
func (p Policy) Check(j *Job) error {
	if j.ReplyTo != "" {
		if err := p.checkReplyTo(j.ReplyTo); err != nil {
			return err
		}
	}
	if limit := p.maxTimeout(); time.Duration(j.Timeout) > limit {
		return fmt.Errorf("timeout %s is above the ceiling of %s (JETPOST_MAX_TIMEOUT)", time.Duration(j.Timeout), limit)
	}
	return nil
}

func (p Policy) maxTimeout() time.Duration {
	if p.MaxTimeout <= 0 {
		return DefaultMaxTimeout
	}
	return p.MaxTimeout
}

func (p Policy) subjectPrefix() string {
	if p.SubjectPrefix == "" {
		return "jetpost"
	}
	return p.SubjectPrefix
}

func (p Policy) checkReplyTo(subject string) error {
	if why := ReservedSubject(subject, p.subjectPrefix()); why != "" {
		return fmt.Errorf("reply_to %s is refused: %s", quote(subject), why)
	}
	if len(p.ReplyPrefixes) == 0 {
		return fmt.Errorf("reply_to %s is refused: this deployment allows no reply_to subjects (JETPOST_REPLY_PREFIXES is empty)", quote(subject))
	}
	for _, prefix := range p.ReplyPrefixes {
		if UnderSubject(subject, prefix) {
			return nil
		}
	}
	return fmt.Errorf("reply_to %s is refused: not under any of JETPOST_REPLY_PREFIXES (%s)", quote(subject), strings.Join(p.ReplyPrefixes, ","))
}

// ReservedSubject says why subject may never receive a job's result copy,
// or "": the server's and JetStream's API ("$JS.…", "$KV.…", "$SYS.…",
// every "$" subject), request replies ("_INBOX.…"), and everything under the
// deployment's own prefix (its jobs, results and dead letters). A result
// published there could forge records, reset attempt counts or call the
// JetStream API with the worker's rights.
func ReservedSubject(subject, deploymentPrefix string) string {
	first, _, _ := strings.Cut(subject, ".")
	switch {
	case strings.HasPrefix(first, "$"):
		return "subjects starting with $ are the NATS server's and JetStream's API"
	case first == "_INBOX" || strings.HasPrefix(first, "_INBOX_") || first == "_R_":
		return "_INBOX subjects carry other clients' replies"
	case first == deploymentPrefix:
		return fmt.Sprintf("subjects under %q are this deployment's jobs, results and dead letters", deploymentPrefix)
	}
	return ""
}

// UnderSubject reports whether subject is prefix or below it, token by
// token ("a.b" is under "a" and "a.>", "ab" is not under "a"). The prefix
// ">" covers every subject.
func UnderSubject(subject, prefix string) bool {
	prefix = strings.TrimSuffix(prefix, ".>")
	if prefix == ">" {
		return true
	}
	return subject == prefix || strings.HasPrefix(subject, prefix+".")
}

// ParseReplyPrefixes reads JETPOST_REPLY_PREFIXES: subject prefixes,
// comma-separated, each a subject without wildcards (a trailing ".>", or ">"
// alone, is allowed). A prefix that could only reach reserved subjects is an
// error: it would allow nothing, and says the operator meant something else.
func ParseReplyPrefixes(s, deploymentPrefix string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		if p == ">" {
			out = append(out, p)
			continue
		}
		bare := strings.TrimSuffix(p, ".>")
		if !ValidSubject(bare) {
			return nil, fmt.Errorf("%q is not a subject prefix like \"replies\" or \"replies.>\" (no wildcards but a trailing >)", p)
		}
		if why := ReservedSubject(bare, deploymentPrefix); why != "" {
			return nil, fmt.Errorf("%q is reserved: %s", p, why)
		}
		out = append(out, bare)
	}
	return out, nil
}
