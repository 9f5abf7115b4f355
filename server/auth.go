package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// tokenCheck compares presented tokens with the configured one in constant time. Both sides are
// hashed first so that the comparison does not even reveal the token's length.
type tokenCheck struct {
	set  bool
	hash [32]byte
}

func newTokenCheck(token string) tokenCheck {
	return tokenCheck{set: token != "", hash: sha256.Sum256([]byte(token))}
}

func (t tokenCheck) matches(presented string) bool {
	h := sha256.Sum256([]byte(presented))
	return subtle.ConstantTimeCompare(h[:], t.hash[:]) == 1
}

// allowed reports whether r carries the token: as a bearer token, or (basic set) as the
// password of HTTP basic auth, whatever the user name.
func (t tokenCheck) allowed(r *http.Request, basic bool) bool {
	h := r.Header.Get("Authorization")
	if scheme, cred, ok := strings.Cut(h, " "); ok && strings.EqualFold(scheme, "Bearer") {
		return t.matches(strings.TrimSpace(cred))
	}
	if basic {
		if _, pass, ok := r.BasicAuth(); ok {
			return t.matches(pass)
		}
	}
	return false
}

// guard applies a route's access level.
func (s *Server) guard(a access, h http.Handler) http.Handler {
	if a == open || !s.token.set {
		// Without a token New has made sure the server is on loopback and was told to run so.
		return h
	}
	if a == ops && s.o.Loopback {
		return h
	}
	basic := a == ops || a == browse
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.token.allowed(r, basic) {
			h.ServeHTTP(w, r)
			return
		}
		if basic {
			// Lets a browser ask for the token (as the password) instead of showing an error.
			w.Header().Set("WWW-Authenticate", `Basic realm="kontextq", charset="UTF-8"`)
		} else {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kontextq"`)
		}
		msg := "missing or wrong API token: send Authorization: Bearer <KONTEXTQ_API_TOKEN>"
		if basic {
			msg += " (or HTTP basic auth with the token as password)"
		}
		writeError(w, http.StatusUnauthorized, msg, nil)
	})
}
