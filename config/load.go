package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/kontextq/kontextq/internal/suggest"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// source is where a setting's value came from; problems name it so the user knows what to fix.
type source int

const (
	fromDefault source = iota // Default, or a Config built in code
	fromFile
	fromEnv
	fromFlag
)

type origin struct {
	src  source
	file string
	line int
}

// where names the setting the way the user wrote it: the flag, the variable, or file:line: key.
// A value nobody wrote is named both ways, since either is how to change it.
func (o origin) where(s *setting) string {
	switch o.src {
	case fromFlag:
		return "--" + s.Flag
	case fromEnv:
		return s.Env
	case fromFile:
		if o.line > 0 {
			return fmt.Sprintf("%s:%d: %s", o.file, o.line, s.Flag)
		}
		return o.file + ": " + s.Flag
	default:
		return fmt.Sprintf("--%s (%s)", s.Flag, s.Env)
	}
}

// problem is one thing wrong with the configuration.
type problem struct {
	where string
	msg   string
}

func (p *problem) Error() string { return p.where + ": " + p.msg }

// leaves flattens errors.Join trees into their messages.
func leaves(err error) []string {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []string
		for _, e := range j.Unwrap() {
			out = append(out, leaves(e)...)
		}
		return out
	}
	return []string{err.Error()}
}

// flagValue holds a flag's text as given: parsing waits for Load, so that a bad value is
// reported with every other problem, in kontextq's words, and a secret is never echoed by
// pflag's own "invalid argument" message.
type flagValue struct {
	raw    string
	items  []string
	typ    string
	list   bool
	redact func(string) string // nil for a setting that is not secret
}

func (v *flagValue) Set(s string) error {
	if v.list {
		v.items = append(v.items, s)
	}
	v.raw = s
	return nil
}

func (v *flagValue) Type() string { return v.typ }

// String is what pflag and anyone walking the FlagSet sees, so it redacts.
func (v *flagValue) String() string {
	if v.redact != nil {
		return v.redact(v.value())
	}
	return v.value()
}

func (v *flagValue) value() string {
	if v.list {
		return strings.Join(v.items, ",")
	}
	return v.raw
}

// RegisterFlags adds a flag to fs for each setting named (by its flag name), or for every
// setting when none is named, so that a command lists only the settings it uses. Each flag's
// help names its environment variable and its default. Settings without a flag can still be set
// by the environment and the config file. It panics on a name that is no setting.
func RegisterFlags(fs *pflag.FlagSet, names ...string) {
	chosen := settings
	if len(names) > 0 {
		chosen = make([]*setting, len(names))
		for i, n := range names {
			if chosen[i] = settingFor(n); chosen[i] == nil {
				panic(fmt.Sprintf("config: no setting %q", n))
			}
		}
	}
	for _, s := range chosen {
		v := &flagValue{typ: s.typ, list: s.list, redact: s.redact}
		f := fs.VarPF(v, s.Flag, "", s.Help+" (env "+s.Env+")")
		f.DefValue = s.Default
		if s.typ == "bool" {
			f.NoOptDefVal = "true" // --archive-origin alone means true
		}
	}
}

// Load builds the Config from, lowest first: Default, the YAML file named by --config or
// KONTEXTQ_CONFIG, the environment (read only through getenv; an empty variable counts as
// unset), and the flags of fs that were given (fs must be parsed; fs may be nil). The result is
// then validated. The error joins every problem found, each naming the flag, variable or
// file:line: key at fault; with an error, the Config is incomplete and must not be run.
func Load(fs *pflag.FlagSet, getenv func(string) string) (Config, error) {
	if getenv == nil {
		getenv = func(string) string { return "" }
	}
	type rawValue struct {
		text string
		from origin
	}
	raw := map[string]rawValue{}
	var problems []error

	flagText := func(s *setting) (string, bool) {
		if fs == nil {
			return "", false
		}
		f := fs.Lookup(s.Flag)
		if f == nil || !f.Changed {
			return "", false
		}
		if v, ok := f.Value.(*flagValue); ok {
			return v.value(), true
		}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			return strings.Join(sv.GetSlice(), ","), true
		}
		return f.Value.String(), true
	}

	// The file is found first because it is the lowest layer that the other two override.
	cfgSetting := settingFor(configFlag)
	path, given := flagText(cfgSetting)
	if given {
		raw[configFlag] = rawValue{path, origin{src: fromFlag}}
	} else if path = getenv(cfgSetting.Env); path != "" {
		raw[configFlag] = rawValue{path, origin{src: fromEnv}}
	}
	if path != "" {
		values, errs := readFile(path, raw[configFlag].from.where(cfgSetting))
		for _, v := range values {
			raw[v.key] = rawValue{v.text, origin{src: fromFile, file: path, line: v.line}}
		}
		problems = append(problems, errs...)
	}

	for _, s := range settings {
		if s.Flag == configFlag {
			continue
		}
		if text := getenv(s.Env); text != "" {
			raw[s.Flag] = rawValue{text, origin{src: fromEnv}}
		}
		if text, ok := flagText(s); ok {
			raw[s.Flag] = rawValue{text, origin{src: fromFlag}}
		}
	}

	c := Default()
	origins := map[string]origin{}
	for _, s := range settings {
		r, ok := raw[s.Flag]
		if !ok {
			continue
		}
		origins[s.Flag] = r.from
		// parse leaves the field at its default when it fails, so validation does not report
		// the same setting a second time.
		for _, msg := range leaves(s.parse(&c, r.text)) {
			problems = append(problems, &problem{where: r.from.where(s), msg: msg})
		}
	}
	problems = append(problems, c.validate(origins)...)
	c.given = map[string]bool{}
	for flag := range origins {
		c.given[flag] = true
	}
	return c, errors.Join(problems...)
}

type fileValue struct {
	key  string
	text string
	line int
}

// readFile returns the settings of a YAML file as text, the form every source shares. It
// returns what it could read along with every problem: unknown keys (typos would otherwise be
// silently ignored), repeated keys, and values of the wrong shape. Values are never quoted in
// its messages, since the file may hold secrets.
func readFile(path, namedBy string) ([]fileValue, []error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, []error{&problem{where: namedBy, msg: "cannot read the config file: " + err.Error()}}
	}
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil // an empty file sets nothing
		}
		return nil, []error{&problem{where: path, msg: "not valid YAML: " + strings.TrimPrefix(err.Error(), "yaml: ")}}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, []error{&problem{where: path, msg: "holds more than one YAML document; want one mapping of setting: value"}}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		root = root.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return nil, nil
	}
	if root.Kind != yaml.MappingNode {
		return nil, []error{&problem{where: fmt.Sprintf("%s:%d", path, root.Line), msg: "want a mapping of setting: value, such as rate: 20/10s"}}
	}

	var values []fileValue
	var problems []error
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], resolve(root.Content[i+1])
		at := fmt.Sprintf("%s:%d", path, k.Line)
		key := k.Value
		s := settingFor(key)
		switch {
		case k.Kind != yaml.ScalarNode:
			problems = append(problems, &problem{where: at, msg: "a key must be a setting name, such as rate"})
			continue
		case s == nil:
			msg := fmt.Sprintf("unknown setting %q", key)
			if guess := suggestSetting(key); guess != "" {
				msg += fmt.Sprintf("; did you mean %q?", guess)
			}
			problems = append(problems, &problem{where: at, msg: msg})
			continue
		case key == configFlag:
			problems = append(problems, &problem{where: at + ": " + key, msg: "a config file cannot name another; use --config or KONTEXTQ_CONFIG"})
			continue
		}
		if first, dup := seen[key]; dup {
			problems = append(problems, &problem{where: at + ": " + key, msg: fmt.Sprintf("set twice (first on line %d)", first)})
			continue
		}
		seen[key] = k.Line
		text, err := nodeText(s, v)
		if err != nil {
			problems = append(problems, &problem{where: at + ": " + key, msg: err.Error()})
			continue
		}
		values = append(values, fileValue{key: key, text: text, line: k.Line})
	}
	return values, problems
}

func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// nodeText turns a value into the text an environment variable would hold. A list setting
// (price) also takes a YAML mapping {model: credits} or a sequence of model=credits.
func nodeText(s *setting, v *yaml.Node) (string, error) {
	switch v.Kind {
	case yaml.ScalarNode:
		if v.Tag == "!!null" {
			return "", nil
		}
		return v.Value, nil
	case yaml.MappingNode:
		if !s.list {
			break
		}
		var parts []string
		for i := 0; i+1 < len(v.Content); i += 2 {
			k, val := v.Content[i], resolve(v.Content[i+1])
			if k.Kind != yaml.ScalarNode || val.Kind != yaml.ScalarNode {
				return "", fmt.Errorf("want model: credits entries, such as flux-kontext-pro: 5")
			}
			parts = append(parts, k.Value+"="+val.Value)
		}
		return strings.Join(parts, ","), nil
	case yaml.SequenceNode:
		if !s.list {
			break
		}
		var parts []string
		for _, item := range v.Content {
			item = resolve(item)
			if item.Kind != yaml.ScalarNode {
				return "", fmt.Errorf("want a list of model=credits, such as [flux-kontext-pro=5]")
			}
			parts = append(parts, item.Value)
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("want a single value, not a list or mapping")
}

func settingFor(key string) *setting {
	for _, s := range settings {
		if s.Flag == key {
			return s
		}
	}
	return nil
}

// suggestSetting finds the setting a mistyped key most likely meant: the same words spelt as an
// environment variable or a Go field (KIE_API_KEY, kieApiKey), or a near miss (ratee).
func suggestSetting(key string) string {
	norm := func(s string) string {
		s = strings.ToLower(s)
		s = strings.NewReplacer("-", "", "_", "", " ", "").Replace(s)
		return s
	}
	k := norm(key)
	best, bestDist := "", 3
	for _, s := range settings {
		if s.Flag == configFlag {
			continue
		}
		if k == norm(s.Flag) || k == norm(s.Env) || k == norm(strings.TrimPrefix(s.Env, "KONTEXTQ_")) {
			return s.Flag
		}
		if d := suggest.Distance(strings.ToLower(key), s.Flag); d < bestDist {
			best, bestDist = s.Flag, d
		}
	}
	return best
}
