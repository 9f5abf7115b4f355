package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/kontextq/kontextq/internal/buildinfo"
)

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print kontextq's version, VCS revision and Go version (from the binary's build information)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), buildinfo.Read())
			return nil
		},
	}
}
