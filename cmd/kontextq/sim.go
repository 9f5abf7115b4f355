package main

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/kontextq/kontextq/kie/kiesim"
	"github.com/kontextq/kontextq/ratelimit"
)

func newSimCmd() *cobra.Command {
	var (
		addr             string
		o                kiesim.Options
		limit, pollLimit string
		simPrices        []string
		credits          float64
	)
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Serve the Kie.ai simulator (API and upload host on one address) for trying kontextq without an account",
		Long: `sim serves a faithful simulator of Kie.ai's Flux Kontext, file-upload and common APIs, faults
and quirks included. Point kontextq at it with KIE_BASE_URL and KIE_UPLOAD_URL set to its address and
KIE_API_KEY set to its key (default sim-key).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rl, rerr := parseRateFlag("--rate", limit)
			pl, perr := parseRateFlag("--poll-rate", pollLimit)
			prices, perr2 := parseSimPrices(simPrices)
			var cerr error
			if credits < 0 {
				cerr = fmt.Errorf("--credits %v: want a balance of 0 or more (0: unlimited)", credits)
			}
			if err := errors.Join(rerr, perr, perr2, cerr); err != nil {
				return usageErr(err)
			}
			o.Prices = prices
			o.GenerateLimit, o.GenerateWindow = rl.Events, rl.Per
			o.RecordInfoLimit, o.RecordInfoWindow = pl.Events, pl.Per
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return usageErr(fmt.Errorf("--listen %s: %w", addr, err))
			}
			if o.PublicURL == "" {
				o.PublicURL = "http://" + ln.Addr().String()
			}
			o.Credits = credits
			sim := kiesim.New(o)
			defer sim.Close()
			srv := &http.Server{Handler: sim.Handler(), ReadHeaderTimeout: 10 * time.Second}
			fmt.Fprintf(cmd.OutOrStdout(), "Kie simulator on %s (key %q)\n  export KIE_BASE_URL=%s KIE_UPLOAD_URL=%s KIE_API_KEY=%s\n",
				o.PublicURL, o.Key, o.PublicURL, o.PublicURL, o.Key)
			go func() {
				<-cmd.Context().Done()
				_ = srv.Close()
			}()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&addr, "listen", "127.0.0.1:8089", "host:port to listen on")
	f.StringVar(&o.Key, "key", "sim-key", "the API key the simulator accepts")
	f.StringVar(&o.PublicURL, "public-url", "", "base URL of the simulator as clients reach it (default http:// and the --listen address)")
	f.StringVar(&limit, "rate", "20/10s", "generate calls accepted per sliding window, as N/DURATION")
	f.StringVar(&pollLimit, "poll-rate", "10/1s", "record-info calls accepted per sliding window, as N/DURATION")
	// The spellings of earlier releases, which scripts may use.
	f.StringVar(&addr, "addr", "127.0.0.1:8089", "the same as --listen")
	f.StringVar(&limit, "limit", "20/10s", "the same as --rate")
	f.StringVar(&pollLimit, "poll-limit", "10/1s", "the same as --poll-rate")
	_ = f.MarkDeprecated("addr", "use --listen")
	_ = f.MarkDeprecated("limit", "use --rate")
	_ = f.MarkDeprecated("poll-limit", "use --poll-rate")
	f.DurationVar(&o.GenTimeMedian, "gen-time", 8*time.Second, "median generation time (lognormal)")
	f.Float64Var(&o.GenerationFailureRate, "generation-failure-rate", 0, "fraction of tasks whose generation fails (successFlag 3)")
	f.Float64Var(&o.TransientErrorRate, "transient-error-rate", 0, "fraction of API calls answering code 500")
	f.Float64Var(&o.TruncateRate, "truncate-rate", 0, "fraction of image downloads cut off midway")
	f.BoolVar(&o.Quirks, "quirks", false, "vary record-info payloads as Kie does (time formats, null strings)")
	f.DurationVar(&o.ResultTTL, "result-ttl", 14*24*time.Hour, "how long result images stay downloadable")
	f.Int64Var(&o.Seed, "seed", 1, "seed of every random choice")
	f.Float64Var(&credits, "credits", 0, "the account's starting balance; generate answers 402 once it is below a task's price (0: unlimited)")
	f.StringSliceVar(&simPrices, "price", nil, "credits billed per task of a model, as model=credits (repeat, or comma-separate); unlisted models cost 1")
	f.BoolVar(&o.RemoteFetch, "remote-fetch", true, "fetch inputImage and URL-upload links on any host, as Kie does (false: only loopback and the simulator's own files; others fail as unreachable)")
	f.DurationVar(&o.FetchTimeout, "fetch-timeout", 30*time.Second, "how long one fetch of an input image or URL upload may take")
	return cmd
}

// parseRateFlag reads the N/DURATION value of flag.
func parseRateFlag(flag, v string) (ratelimit.Rate, error) {
	r, err := ratelimit.ParseRate(v)
	if err != nil {
		return r, fmt.Errorf("%s: %v", flag, err)
	}
	return r, nil
}

// parseSimPrices reads the simulator's --price entries.
func parseSimPrices(entries []string) (map[string]float64, error) {
	if len(entries) == 0 {
		return nil, nil
	}
	out := map[string]float64{}
	var problems []error
	for _, e := range entries {
		model, v, ok := strings.Cut(e, "=")
		p, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if !ok || err != nil || p < 0 || math.IsInf(p, 0) || math.IsNaN(p) {
			problems = append(problems, fmt.Errorf("--price %q: want model=credits, such as flux-kontext-pro=5", e))
			continue
		}
		out[strings.TrimSpace(model)] = p
	}
	return out, errors.Join(problems...)
}
