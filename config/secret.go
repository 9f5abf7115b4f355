package config

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
)

// redacted is what a secret looks like wherever it is printed.
const redacted = "[redacted]"

// Secret is a credential: an API key, an HMAC key, a bearer token. Every way of printing it
// (fmt with any verb, encoding/json, encoding.TextMarshaler, log/slog) yields "[redacted]" when
// it is set and "" when it is not, so a Config or a Secret can be logged without thought. Only
// Reveal gives the value, and only code that sends it somewhere should call it.
type Secret string

// Reveal returns the secret itself.
func (s Secret) Reveal() string { return string(s) }

// String returns "[redacted]", or "" for an unset secret so that "is it set?" stays visible.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString keeps %#v redacted too.
func (s Secret) GoString() string { return strconv.Quote(s.String()) }

// Format applies any verb and flags to the redacted form: without it, %x or %d would print
// the underlying string.
func (s Secret) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, fmt.FormatString(f, verb), s.String())
}

// MarshalText makes encoders that honour encoding.TextMarshaler (YAML, JSON map keys) redact.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// MarshalJSON encodes the redacted form as a JSON string.
func (s Secret) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// LogValue redacts the secret in log/slog output, whatever the handler.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// SecretURL is a URL that may carry a password in its user info, such as
// redis://:password@host:6379/0, or in its query (password=, as a Sentinel URL carries the
// master's). It prints with the passwords replaced by "[redacted]" and the
// rest intact, so logs still say which server was meant. A value that does not parse as a URL
// prints as "[redacted]" entirely, since there is no telling where its password is.
type SecretURL string

// Reveal returns the URL with its password.
func (u SecretURL) Reveal() string { return string(u) }

// String returns the URL with its password redacted.
func (u SecretURL) String() string {
	if u == "" {
		return ""
	}
	p, err := url.Parse(string(u))
	if err != nil {
		return redacted
	}
	// A Sentinel URL (redis://sentinel:26379?master_name=m&password=...) carries the master's
	// password in its query.
	rawQuery := p.RawQuery
	if q := p.Query(); q.Has("password") || q.Has("sentinel_password") {
		q.Del("password")
		q.Del("sentinel_password")
		rawQuery = q.Encode()
		if rawQuery != "" {
			rawQuery += "&"
		}
		rawQuery += "password=" + redacted
	}
	p.RawQuery = ""
	s := p.String()
	if p.User != nil {
		if _, ok := p.User.Password(); ok {
			// url.URL.Redacted writes "xxxxx"; rebuilding by hand keeps one spelling of
			// redaction and avoids the brackets being percent-escaped.
			user := url.User(p.User.Username()).String()
			p.User = nil
			rest := strings.TrimPrefix(p.String(), p.Scheme+"://")
			s = p.Scheme + "://" + user + ":" + redacted + "@" + rest
		}
	}
	if rawQuery != "" {
		s += "?" + rawQuery
	}
	return s
}

// GoString keeps %#v redacted too.
func (u SecretURL) GoString() string { return strconv.Quote(u.String()) }

// Format applies any verb and flags to the redacted form.
func (u SecretURL) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, fmt.FormatString(f, verb), u.String())
}

// MarshalText encodes the redacted form.
func (u SecretURL) MarshalText() ([]byte, error) { return []byte(u.String()), nil }

// MarshalJSON encodes the redacted form as a JSON string.
func (u SecretURL) MarshalJSON() ([]byte, error) { return json.Marshal(u.String()) }

// LogValue redacts the password in log/slog output.
func (u SecretURL) LogValue() slog.Value { return slog.StringValue(u.String()) }
