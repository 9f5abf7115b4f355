// Command kontextq turns files of prompts into archived Flux Kontext images through Kie.ai, as
// fast as the account's rate limit allows, without losing an image or paying twice for one.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/kontextq/kontextq/config"
)

// Exit codes of run (and of status --wait).
const (
	exitOK     = 0 // every job archived
	exitFailed = 1 // some jobs failed, each listed with its reason
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
	root := newRoot()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil {
			fmt.Fprintln(os.Stderr, "kontextq:", ee.err)
		}
		os.Exit(ee.code)
	}
	fmt.Fprintln(os.Stderr, "kontextq:", err)
	os.Exit(exitUsage)
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
	config.RegisterFlags(root.PersistentFlags())
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageErr(fmt.Errorf("%w (see %s --help)", err, c.CommandPath()))
	})
	root.AddCommand(newRunCmd(), newWorkerCmd(), newSimCmd(), newConfigCmd(), newBenchCmd())
	root.AddCommand(newLoadCmd(), newStatusCmd(), newExportCmd(), newRetryCmd(), newCancelCmd())
	root.AddCommand(newServeCmd(), newDemoCmd(), newVerifyCmd())
	return root
}

// loadConfig reads the settings of a command.
func loadConfig(cmd *cobra.Command) (config.Config, error) {
	cfg, err := config.Load(cmd.Flags(), os.Getenv)
	if err != nil {
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
