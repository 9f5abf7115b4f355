package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kontextq/kontextq/config"
	"github.com/kontextq/kontextq/internal/human"
	"github.com/kontextq/kontextq/jobs"
)

// Budgets from the command line: --max-credits caps a batch, --min-balance sets the floor under
// the account's balance. Both are kept in the ledger, so every worker process of the namespace
// enforces them, and given again (to load, run or budget) they replace what was set and release
// the held jobs the new budget covers. The enforcement itself is in jobs/budget.go and
// worker/budget.go.

// budgetFlags are --max-credits and --min-balance.
type budgetFlags struct {
	maxCredits, minBalance string
}

func (f *budgetFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.maxCredits, "max-credits", "", "most credits the batch may spend, kept with the batch for every worker; "+
		"jobs beyond it stay queued, held, until it is raised (none removes the cap)")
	fs.StringVar(&f.minBalance, "min-balance", "", "floor under the account's balance: no submission of the namespace takes it "+
		"below this many credits (none removes the floor)")
}

// budgetChange is what the flags ask to change.
type budgetChange struct {
	setCap, setFloor bool
	cap, floor       *jobs.Credits // nil removes
}

func (c budgetChange) any() bool { return c.setCap || c.setFloor }

// parse checks the flags, naming the one at fault.
func (f budgetFlags) parse() (budgetChange, error) {
	var ch budgetChange
	var problems []error
	var err error
	if f.maxCredits != "" {
		ch.setCap = true
		if ch.cap, err = parseCredits("--max-credits", f.maxCredits); err != nil {
			problems = append(problems, err)
		}
	}
	if f.minBalance != "" {
		ch.setFloor = true
		if ch.floor, err = parseCredits("--min-balance", f.minBalance); err != nil {
			problems = append(problems, err)
		}
	}
	if err := errors.Join(problems...); err != nil {
		return ch, usageErr(err)
	}
	return ch, nil
}

// parseCredits reads a number of credits, 0 or more, or "none".
func parseCredits(flag, v string) (*jobs.Credits, error) {
	v = strings.TrimSpace(v)
	if strings.EqualFold(v, "none") {
		return nil, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || math.IsNaN(f) || f > 1e15 {
		return nil, fmt.Errorf("%s %q: want a number of credits, 0 or more (such as 100 or 12.5), or none", flag, v)
	}
	c := jobs.CreditsOf(f)
	return &c, nil
}

// configuredPrices are the --price settings in the ledger's unit.
func configuredPrices(cfg config.Config) map[string]jobs.Credits {
	out := make(map[string]jobs.Credits, len(cfg.Prices))
	for m, p := range cfg.Prices {
		out[m] = jobs.CreditsOf(p)
	}
	return out
}

// applyBudget makes the changes ch asks for (batch "" for the floor alone) and says what they did.
func applyBudget(ctx context.Context, enq *jobs.Enqueuer, batch string, ch budgetChange, cfg config.Config, out io.Writer) error {
	prices := configuredPrices(cfg)
	if ch.setCap {
		n, err := enq.SetMaxCredits(ctx, batch, ch.cap, prices)
		if err != nil {
			return err
		}
		if ch.cap == nil {
			fmt.Fprintf(out, "budget: batch %s has no cap", batch)
		} else {
			fmt.Fprintf(out, "budget: batch %s may spend %s credits", batch, ch.cap)
		}
		fmt.Fprintln(out, released(n))
	}
	if ch.setFloor {
		n, err := enq.SetMinBalance(ctx, ch.floor, prices)
		if err != nil {
			return err
		}
		if ch.floor == nil {
			fmt.Fprintf(out, "budget: no floor under the account's balance (namespace %s)", cfg.Namespace)
		} else {
			fmt.Fprintf(out, "budget: no submission takes the account's balance below %s credits (namespace %s)", ch.floor, cfg.Namespace)
		}
		fmt.Fprintln(out, released(n))
	}
	return nil
}

func released(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("; %d held jobs released", n)
}

func newBudgetCmd() *cobra.Command {
	var bf budgetFlags
	cmd := &cobra.Command{
		Use:   "budget [BATCH]",
		Short: "Show or change a batch's credit cap and the account's balance floor; a raise releases the jobs held",
		Long: `budget shows what BATCH has spent against its cap, how many of its jobs the budget holds and why,
the account's floor and balance as last read, and the prices known per model.

--max-credits N caps BATCH (none removes the cap); --min-balance N sets the floor under the
account's balance for the whole namespace (none removes it). Both are kept in the ledger, so every
worker enforces them at once. A job the budget cannot cover is never sent to Kie: it stays queued,
held, with the reason in status, export and the gallery. Raising the cap (or lowering the floor)
here, or loading or running the batch again with a higher --max-credits, releases the held jobs
the new budget covers.

Prices: --price model=N where you know them. A model without one is priced when a budget needs it
by measuring the account's balance before and after one submission sent while no other submission
of the namespace is in flight (other clients of the same Kie account can skew it: give --price
then). Until its price is known, a model's jobs go one at a time, each while the batch has budget
left, so that one submission may pass the cap by less than its price.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ch, err := bf.parse()
			if err != nil {
				return err
			}
			if ch.setCap && len(args) == 0 {
				return usageErr(errors.New("--max-credits needs a BATCH: kontextq budget BATCH --max-credits N"))
			}
			s, err := openSession(cmd, false)
			if err != nil {
				return err
			}
			defer s.Close()
			ctx, out, l := cmd.Context(), cmd.OutOrStdout(), s.ledger()
			batch := ""
			if len(args) == 1 {
				batch = args[0]
				if _, _, err := s.batchLedger(ctx, batch); err != nil {
					return err
				}
			}
			if ch.any() {
				enq := jobs.NewEnqueuer(s.rdb, jobs.EnqueuerOptions{Namespace: s.cfg.Namespace, Retention: s.cfg.Retention})
				defer enq.Close()
				if err := applyBudget(ctx, enq, batch, ch, s.cfg, out); err != nil {
					return err
				}
			}
			if batch != "" {
				lines, err := batchBudgetLines(ctx, l, batch)
				if err != nil {
					return err
				}
				for _, line := range lines {
					fmt.Fprintln(out, line)
				}
			}
			return printAccountBudget(ctx, l, s.cfg, time.Now(), out)
		},
	}
	bf.register(cmd.Flags())
	return cmd
}

// batchBudgetLines describe a batch's spending and held jobs, for status, budget and run.
func batchBudgetLines(ctx context.Context, l *jobs.Ledger, batch string) ([]string, error) {
	b, err := l.Budget(ctx, batch)
	if err != nil {
		return nil, err
	}
	var lines []string
	spent := b.Spent.String() + " credits spent"
	if b.Reserved > 0 {
		spent += ", " + b.Reserved.String() + " reserved for submissions under way"
	}
	if b.Unpriced > 0 {
		spent += fmt.Sprintf(" (and %d submissions whose price was not known)", b.Unpriced)
	}
	if b.HasCap {
		lines = append(lines, fmt.Sprintf("budget: %s of a cap of %s", spent, b.Cap))
	} else if b.Spent > 0 || b.Unpriced > 0 {
		lines = append(lines, "budget: "+spent+"; no cap")
	}
	if b.Held() > 0 {
		lines = append(lines, fmt.Sprintf("held: %d jobs, %s; %s", b.Held(), b.HeldReason(), raiseHint(batch, b)))
	}
	return lines, nil
}

// raiseHint says how to release a batch's held jobs.
func raiseHint(batch string, b jobs.BatchBudget) string {
	var hints []string
	if b.HeldCap > 0 {
		hints = append(hints, "raise the cap with kontextq budget "+batch+" --max-credits N (or load it again with a higher --max-credits)")
	}
	if b.HeldFloor > 0 {
		hints = append(hints, "top the account up or lower the floor with kontextq budget --min-balance N")
	}
	return strings.Join(hints, "; ")
}

// printAccountBudget shows the floor, the balance as last read and the prices known.
func printAccountBudget(ctx context.Context, l *jobs.Ledger, cfg config.Config, now time.Time, out io.Writer) error {
	a, err := l.Account(ctx)
	if err != nil {
		return err
	}
	floor := "no floor"
	if a.HasFloor {
		floor = "floor " + a.Floor.String() + " credits"
	}
	balance := "balance not read yet (it is read when a floor needs it)"
	if !a.BalanceAt.IsZero() {
		balance = fmt.Sprintf("balance %s credits %s ago, about %s after what was reserved since",
			a.Balance, human.Duration(now.Sub(a.BalanceAt).Round(time.Second)), a.Estimate)
	}
	fmt.Fprintf(out, "account (namespace %s): %s; %s\n", cfg.Namespace, floor, balance)
	learned, err := l.LearnedPrices(ctx)
	if err != nil {
		return err
	}
	configured := configuredPrices(cfg)
	models := map[string]bool{}
	for m := range learned {
		models[m] = true
	}
	for m := range configured {
		models[m] = true
	}
	if len(models) == 0 {
		fmt.Fprintln(out, "prices: none known; give them with --price, or a budget measures them")
		return nil
	}
	names := make([]string, 0, len(models))
	for m := range models {
		names = append(names, m)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, m := range names {
		if p, ok := configured[m]; ok {
			parts[i] = m + " " + p.String() + " (--price)"
		} else {
			parts[i] = m + " " + learned[m].String() + " (measured, or a worker's --price)"
		}
	}
	fmt.Fprintf(out, "prices per image in credits: %s\n", strings.Join(parts, ", "))
	return nil
}
