package config

import (
	"errors"
	"fmt"
	"os"
)

// validateConsole checks the console's token and its own NATS identity.
func (c *Worker) validateConsole() error {
	var errs []error
	if c.ConsoleToken != "" && len(c.ConsoleToken) < 16 {
		errs = append(errs, fmt.Errorf("JETPOST_CONSOLE_TOKEN: %d bytes is too short to keep the console's actions from being guessed; use at least 16 (e.g. openssl rand -hex 32)", len(c.ConsoleToken)))
	}
	if c.HTTPAddr == "" && (c.ConsoleToken != "" || c.ConsoleNatsUser != "" || c.ConsoleNatsCredsFile != "") {
		errs = append(errs, errors.New("JETPOST_CONSOLE_* is set but JETPOST_HTTP_ADDR is not: the console is served there"))
	}
	if c.ConsoleNatsUser != "" && c.ConsoleNatsCredsFile != "" {
		errs = append(errs, errors.New("JETPOST_CONSOLE_NATS_USER and JETPOST_CONSOLE_NATS_CREDS_FILE: set one"))
	}
	if c.ConsoleNatsPassword != "" && c.ConsoleNatsUser == "" {
		errs = append(errs, errors.New("JETPOST_CONSOLE_NATS_PASSWORD needs JETPOST_CONSOLE_NATS_USER"))
	}
	if c.ConsoleNatsCredsFile != "" {
		if _, err := os.Stat(c.ConsoleNatsCredsFile); err != nil {
			errs = append(errs, fmt.Errorf("JETPOST_CONSOLE_NATS_CREDS_FILE=%q: %w", c.ConsoleNatsCredsFile, err))
		}
	}
	return errors.Join(errs...)
}

// ConsoleConnection is the shared configuration with the console's own
// NATS identity in place of the worker's (same servers and TLS), and
// whether one is configured.
func (c *Worker) ConsoleConnection() (Common, bool) {
	if c.ConsoleNatsUser == "" && c.ConsoleNatsCredsFile == "" {
		return c.Common, false
	}
	cc := c.Common
	cc.NatsUser, cc.NatsPassword, cc.NatsToken, cc.NatsNkeyFile = c.ConsoleNatsUser, c.ConsoleNatsPassword, "", ""
	cc.NatsCredsFile = c.ConsoleNatsCredsFile
	return cc, true
}
