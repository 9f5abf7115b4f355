// Package app is kontextq's composition root: the one place that turns a config.Config into the
// running parts — the logger, the Redis client everything shares, the account's limiters, the Kie
// client, the archive store, the journal and the worker. The binary (cmd/kontextq), the benchmark
// (internal/bench) and the tests all build a worker here, so what is measured and tested is what
// users run.
//
// Problems the user can fix (a missing key, a Redis URL that does not parse, an archive that
// cannot be written) are returned as *ConfigError, which the binary reports as bad configuration
// (exit 2); anything else is an operation that could not finish.
package app

import "errors"

// ConfigError is a problem in the settings, named by the setting at fault.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

func configErr(err error) error { return &ConfigError{Err: err} }

// IsConfigError reports whether err is, or wraps, a *ConfigError.
func IsConfigError(err error) bool {
	var ce *ConfigError
	return errors.As(err, &ce)
}
