// Package kie is the typed client for Kie.ai's Flux Kontext, file-upload and account APIs.
//
// Every call goes through one pipeline: build the request with the bearer key and an explicit
// User-Agent, cap the answer at Options.MaxResponseBytes, then hand status, headers and body to one
// decoder that yields either the envelope's data or an *Error. Kie signals errors both as HTTP 200
// with a non-200 body code and as a non-200 HTTP status; both forms become the same *Error, so
// callers branch on the Is* helpers (IsRateLimited, IsBadKey, IsTransient, ...) and never on
// messages, which Kie localizes.
//
// The client never retries: asynq is the one retry layer, and a retry here would hide 429s from
// the rate limiter and could bill a generation twice. The API key lives in an unexported field and
// is kept out of every error, log value and fmt verb.
//
// Result images live on Kie's file host (a CDN); Fetch downloads them without the API key.
// Callback helpers (SignCallback, VerifyCallback) check Kie's optional webhook signatures.
package kie

// Version is kontextq's version, sent in the default User-Agent.
const Version = "0.1.0"
