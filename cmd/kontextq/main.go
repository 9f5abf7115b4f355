// Command kontextq turns files of prompts into archived Flux Kontext images through Kie.ai, as
// fast as the account's rate limit allows, without losing an image or paying twice for one.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kontextq/kontextq/config"
	"github.com/kontextq/kontextq/internal/app"
)

// Exit codes of every command (run's, as README documents them).
const (
	exitOK     = 0 // every job archived
	exitFailed = 1 // some jobs failed, each listed with its reason, or the command could not finish
	exitUsage  = 2 // bad usage, configuration or input file
)

// exitError carries an exit code out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit %d", e.code)
	}
	return e.err.Error()
}
func (e *exitError) Unwrap() error { return e.err }

func usageErr(err error) error { return &exitError{code: exitUsage, err: err} }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app.SilenceRedis() // until a command builds its logger
	root := newRoot()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return
	}
	code, msg := exitStatus(err, commandStarted)
	if msg != "" {
		fmt.Fprintln(os.Stderr, "kontextq:", msg)
	}
	os.Exit(code)
}

// commandStarted is set once cobra has accepted the command line and a command begins to run.
var commandStarted bool

// exitStatus maps a command's error to the exit code and message. An error cobra returns before
// any command ran (an unknown command) is bad usage; one a command returns without a code of its
// own is an operation that could not finish (Redis unreachable, a failed write), which is not the
// user's input: exit 1, so that scripts retry it rather than "fix" the input.
func exitStatus(err error, started bool) (int, string) {
	var ee *exitError
	switch {
	case errors.As(err, &ee):
		if ee.err == nil {
			return ee.code, ""
		}
		return ee.code, ee.err.Error()
	case app.IsConfigError(err):
		return exitUsage, err.Error()
	case !started:
		return exitUsage, err.Error()
	}
	return exitFailed, err.Error()
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "kontextq",
		Short: "Archive Flux Kontext images from files of prompts, at the rate Kie.ai allows",
		Long: `kontextq queues image jobs in Redis (through asynq), submits them to Kie.ai's Flux Kontext
API under a shared rate limit, polls for results and archives every image before Kie deletes it.

Settings come from flags, then environment variables, then an optional YAML file (--config);
"kontextq config" prints the effective settings with secrets redacted.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// Every setting is accepted by every command, hidden, so that scripts placing one before the
	// command or passing one a command does not use keep working; each command lists as its own
	// flags only the settings it uses (commandSettings).
	config.RegisterFlags(root.PersistentFlags())
	root.PersistentFlags().VisitAll(func(f *pflag.Flag) { f.Hidden = true })
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageErr(fmt.Errorf("%w (see %s --help)", err, c.CommandPath()))
	})
	root.PersistentPreRun = func(*cobra.Command, []string) { commandStarted = true }
	root.AddCommand(newRunCmd(), newWorkerCmd(), newSimCmd(), newConfigCmd(), newBenchCmd())
	root.AddCommand(newLoadCmd(), newStatusCmd(), newExportCmd(), newRetryCmd(), newCancelCmd())
	root.AddCommand(newServeCmd(), newDemoCmd(), newVerifyCmd(), newVersionCmd(), newGalleryCmd(), newBudgetCmd())
	registerSettings(root)
	explainArgs(root)
	return root
}

// The settings commands share, by what they are for.
var (
	logSettings   = []string{"log-level", "log-format", "config"}
	redisSettings = []string{"redis-url", "namespace"}
	kieSettings   = []string{"kie-api-key", "kie-base-url", "kie-upload-url"}
	rateSettings  = []string{"rate", "poll-rate", "transfer-rate"}
	workSettings  = []string{"archive", "submit-workers", "poll-workers", "archive-workers", "generation-retries",
		"poll-interval", "first-poll", "poll-timeout", "retention", "expiry-margin", "result-ttl", "archive-origin", "embed-metadata", "public-url"}
	serveSettings = []string{"listen", "public-url", "webhook-hmac-key", "api-token"}
)

// commandSettings are the settings each command uses (by its path below the root), listed in its
// help as its flags. The environment and the config file set any setting for any command.
var commandSettings = map[string][][]string{
	"run":              {logSettings, redisSettings, kieSettings, rateSettings, workSettings, serveSettings, {"price"}},
	"worker":           {logSettings, redisSettings, kieSettings, rateSettings, workSettings},
	"serve":            {logSettings, redisSettings, kieSettings, rateSettings, serveSettings, {"retention", "archive", "price"}},
	"gallery":          {logSettings, redisSettings, {"archive", "rate", "price", "retention"}},
	"load":             {logSettings, redisSettings, {"rate", "retention", "generation-retries", "price"}},
	"status":           {logSettings, redisSettings, {"rate"}},
	"export":           {logSettings, redisSettings, {"retention", "price"}},
	"retry":            {logSettings, redisSettings, {"retention"}},
	"cancel":           {logSettings, redisSettings, {"retention"}},
	"verify":           {logSettings, redisSettings, kieSettings, {"archive", "transfer-rate", "retention"}},
	"demo":             {logSettings, {"archive", "listen", "rate"}},
	"bench ratelimit":  {logSettings, redisSettings},
	"bench scheduling": {logSettings, {"redis-url"}},
	"config":           nil, // every setting
}

// registerSettings gives each command below c the settings commandSettings lists for it.
func registerSettings(c *cobra.Command) {
	for _, sub := range c.Commands() {
		path := strings.TrimPrefix(sub.CommandPath(), sub.Root().Name()+" ")
		if groups, ok := commandSettings[path]; ok {
			var names []string
			seen := map[string]bool{}
			for _, g := range groups {
				for _, n := range g {
					if !seen[n] {
						seen[n] = true
						names = append(names, n)
					}
				}
			}
			config.RegisterFlags(sub.Flags(), names...)
		}
		registerSettings(sub)
	}
}

// explainArgs makes every command's argument check say what the command takes: cobra's own
// message ("accepts 1 arg(s), received 0") names neither the argument nor the command.
func explainArgs(c *cobra.Command) {
	if check := c.Args; check != nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				return usageErr(fmt.Errorf("%w; usage: %s (see %s --help)", err, cmd.UseLine(), cmd.CommandPath()))
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		explainArgs(sub)
	}
}

// need is a setting a command cannot do without, beyond what config.Load checks.
type need int

const (
	needKey   need = iota // KIE_API_KEY: the command calls Kie
	needRedis             // REDIS_URL: the command has no in-memory Redis to fall back on
)

// loadConfig reads the settings of a command and checks what it needs, reporting every problem
// at once.
func loadConfig(cmd *cobra.Command, needs ...need) (config.Config, error) {
	cfg, err := config.Load(cmd.Flags(), os.Getenv)
	problems := []error{err}
	for _, n := range needs {
		switch n {
		case needKey:
			problems = append(problems, cfg.RequireKieKey())
		case needRedis:
			if cfg.RedisURL == "" {
				problems = append(problems, app.ErrNoRedis)
			}
		}
	}
	if err := errors.Join(problems...); err != nil {
		return cfg, usageErr(fmt.Errorf("configuration:\n%w", err))
	}
	return cfg, nil
}

func newConfigCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "config",
		Short: "Print the effective settings (secrets redacted)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), cfg.String())
			return nil
		},
	}
}
