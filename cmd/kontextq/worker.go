package main

import (
	"github.com/spf13/cobra"
)

func newWorkerCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "worker",
		Short: "Work queued jobs until SIGTERM (run any number, on any number of machines)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			if err := cfg.RequireKieKey(); err != nil {
				return usageErr(err)
			}
			ctx := cmd.Context()
			log := newLogger(cfg, cmd.ErrOrStderr())
			rdb, err := openRedis(ctx, cfg)
			if err != nil {
				return err
			}
			defer rdb.Close()
			store, err := openStore(ctx, cfg)
			if err != nil {
				return err
			}
			defer store.Close()
			w, _, err := newWorker(ctx, cfg, rdb, log, store)
			if err != nil {
				return err
			}
			defer w.Close()
			log.Info("worker started", "namespace", cfg.Namespace, "archive", store.Location(""), "rate", cfg.Rate.String())
			err = w.Run(ctx)
			log.Info("worker stopped")
			return err
		},
	}
}
