// Package kiesim simulates Kie.ai's Flux Kontext API, its file-upload host and its file CDN,
// in process, faithfully enough that a client which works against it works against Kie.
//
// The model: one Sim is one Kie account. A generate call that passes Kie's checks (key, user
// agent, maintenance, feature switch, strict sliding-window rate limit, validation, content
// policy, credits) creates a task whose whole future is decided at once from the seed: how long
// it takes, whether it fails and how, whether a poll times out, whether its callback is lost or
// duplicated. Nothing runs while a task generates; record-info derives the state from the
// clock, so tests inject Options.Now and move time instead of sleeping. Only callbacks need
// timers, one per pending delivery, and an edit's input image is read after the call answers,
// as at Kie: the task reports generating until it has been read, fails (successFlag 2,
// errorCode 400) when it cannot be fetched or is not an image, and otherwise its output is drawn
// from it (cropped to the ratio, posterised, tinted and marked), so an edit visibly is an edit
// of its input. Links on hosts other than loopback are fetched only with Options.RemoteFetch.
//
// Every fault Kie is known for has a knob (Options), and the runtime switches (SetMaintenance,
// SetStorm, SetKey, ...) model account-wide events. Stats and Tasks expose what Kie would have
// seen and billed, including the exact bytes each image had, so end-to-end tests check archives
// against the source.
//
// Use NewServer in tests (the API and upload endpoints live under separate path prefixes, as
// on Kie's two hosts) and New(...).Handler() to serve everything at Kie's real paths.
package kiesim
