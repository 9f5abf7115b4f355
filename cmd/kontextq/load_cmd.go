package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kontextq/kontextq/config"
	"github.com/kontextq/kontextq/internal/app"
	"github.com/kontextq/kontextq/internal/human"
	"github.com/kontextq/kontextq/jobs"
)

// batchFlags are the job-file flags of run and load: the file's format and batch, and defaults
// for the fields a line leaves out.
type batchFlags struct {
	batch, format, name     string
	priority                string
	skipInvalid             bool
	checkInputs             bool
	model, ratio, outFormat string
	inputImage, watermark   string
	safety                  int
	upsampling, translation bool
	uploadCn                bool
	budget                  budgetFlags
	cmd                     *cobra.Command
}

func (b *batchFlags) register(cmd *cobra.Command) {
	b.cmd = cmd
	f := cmd.Flags()
	f.StringVar(&b.batch, "batch", "", "batch name (default: the file's name without extension); archive goes to <archive>/<batch>/")
	f.StringVar(&b.format, "format", "", "file format: jsonl, csv or text (default: by extension; jsonl for - (stdin))")
	f.StringVar(&b.name, "name", jobs.DefaultNameTemplate, "archived file names, e.g. '{line:06}-{slug}'; placeholders "+jobs.NamePlaceholders+
		" (kept unique and file-name safe; fixed when a job is first loaded)")
	f.StringVar(&b.priority, "priority", string(jobs.Bulk), "class the jobs wait in for submission: interactive, normal or bulk; "+
		"a higher class always goes first, batches of one class share the rate in turn")
	f.BoolVar(&b.skipInvalid, "skip-invalid", false, "enqueue the valid lines of a file with bad lines; the bad ones go to FILE.rejects.jsonl")
	f.BoolVar(&b.checkInputs, "check-inputs", false, "before enqueuing, check that every inputImage URL serves an image (HEAD, else its first bytes); lines that would fail are bad lines")
	f.StringVar(&b.model, "model", "", "model for lines that name none: flux-kontext-pro or flux-kontext-max")
	f.StringVar(&b.ratio, "aspect-ratio", "", "aspectRatio for lines that give none: 21:9 16:9 4:3 1:1 3:4 9:16")
	f.StringVar(&b.outFormat, "output-format", "", "outputFormat for lines that give none: jpeg or png")
	f.StringVar(&b.inputImage, "input-image", "", "inputImage (URL or local file) for lines that give none: makes them edits")
	f.StringVar(&b.watermark, "watermark", "", "watermark for lines that give none")
	f.IntVar(&b.safety, "safety-tolerance", 2, "safetyTolerance for lines that give none: 0-6, 0-2 for edits")
	f.BoolVar(&b.upsampling, "prompt-upsampling", false, "promptUpsampling for lines that give none")
	f.BoolVar(&b.translation, "enable-translation", true, "enableTranslation for lines that give none")
	f.BoolVar(&b.uploadCn, "upload-cn", false, "uploadCn for lines that give none")
	b.budget.register(f)
}

func (b *batchFlags) options(path string) loadOptions {
	batch := b.batch
	if batch == "" && path != stdinPath {
		batch = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	d := jobs.Spec{Model: b.model, AspectRatio: b.ratio, OutputFormat: b.outFormat, InputImage: b.inputImage, Watermark: b.watermark}
	// Only flags given on the command line are defaults: an unset field leaves Kie's own default,
	// and the same request keeps the same id whether or not a flag repeats Kie's default.
	if b.cmd != nil {
		f := b.cmd.Flags()
		if f.Changed("safety-tolerance") {
			d.SafetyTolerance = &b.safety
		}
		if f.Changed("prompt-upsampling") {
			d.PromptUpsampling = &b.upsampling
		}
		if f.Changed("enable-translation") {
			d.EnableTranslation = &b.translation
		}
		if f.Changed("upload-cn") {
			d.UploadCn = &b.uploadCn
		}
	}
	o := loadOptions{Path: path, Format: b.format, Batch: batch, NameTemplate: b.name, SkipInvalid: b.skipInvalid, CheckInputs: b.checkInputs, Concurrency: 16, Defaults: d,
		PriorityName: b.priority}
	if path == stdinPath {
		o.Name, o.Stdin = "stdin", true
	}
	return o
}

// openInput checks the options and, for -, copies stdin aside (see stdin.go); close removes
// the copy.
func (b *batchFlags) openInput(path string) (o loadOptions, close func(), err error) {
	o = b.options(path)
	if err := checkOptions(o); err != nil {
		return o, nil, err
	}
	if !o.Stdin {
		return o, func() {}, nil
	}
	return spoolStdin(o, b.cmd.InOrStdin())
}

// defaultFlags names the flag that sets each field of loadOptions.Defaults (and the batch).
var defaultFlags = map[string]string{
	"batch": "--batch", "model": "--model", "aspectRatio": "--aspect-ratio", "outputFormat": "--output-format",
	"inputImage": "--input-image", "watermark": "--watermark", "safetyTolerance": "--safety-tolerance",
	"promptUpsampling": "--prompt-upsampling", "enableTranslation": "--enable-translation", "uploadCn": "--upload-cn",
}

// checkOptions checks the batch name and the defaults given as flags before any file is read,
// naming the flag at fault: the reader would name only the job field.
func checkOptions(o loadOptions) error {
	if o.Stdin && o.Batch == "" {
		return usageErr(errStdinBatch)
	}
	if _, err := jobs.ParseNameTemplate(o.NameTemplate); o.NameTemplate != "" && err != nil {
		return usageErr(fmt.Errorf("--name %w", err))
	}
	if _, err := o.priority(); err != nil {
		return usageErr(err)
	}
	s := o.Defaults
	s.ID, s.Batch, s.Prompt = "", o.Batch, "x"
	err := s.Validate()
	var ve *jobs.ValidationError
	if err == nil || !errors.As(err, &ve) {
		return err
	}
	msgs := make([]string, len(ve.Problems))
	for i, p := range ve.Problems {
		where := defaultFlags[p.Field]
		if where == "" {
			where = p.Field
		}
		msgs[i] = where + ": " + p.Message
		if p.Field == "batch" {
			msgs[i] += " (without --batch, the batch is the file's name less its extension)"
		}
	}
	return usageErr(errors.New(strings.Join(msgs, "; ")))
}

func newLoadCmd() *cobra.Command {
	var (
		bf     batchFlags
		dryRun bool
	)
	cmd := &cobra.Command{
		Use:   "load FILE|-",
		Short: "Check a job file and enqueue its jobs for the workers (or, with --dry-run, say what it would cost)",
		Long: `load reads FILE (JSONL, CSV or plain text, by extension or --format) and enqueues one job per line
for the workers ("kontextq worker") to submit, poll and archive.

Every line is checked first: if any is bad, each is listed as FILE:LINE: field: reason and nothing
is enqueued (exit 2), unless --skip-invalid, which enqueues the good lines and writes the bad ones to
FILE.rejects.jsonl. --check-inputs also asks every inputImage URL whether it serves an image (HEAD,
else a GET of its first bytes; local files are always checked) and counts the lines that would fail
as bad lines, FILE:LINE: inputImage: reason. FILE - reads the jobs from stdin (JSONL unless
--format says otherwise; --batch is required; rejects go to BATCH.rejects.jsonl). Nothing is
written to disk or Redis until the file and Redis are known good. Loading is idempotent: the same file loaded again enqueues nothing, a file that
grew enqueues only its new lines, and two identical lines still mean two images.

--dry-run enqueues nothing: it counts the jobs per model and mode (generation or edit), how many are
new, what they would cost at the prices given with --price (Kie does not publish prices, so none are
assumed), and how long they take at the configured --rate.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var needs []need
			if !dryRun { // a dry run checks against the ledger only when there is one
				needs = append(needs, needRedis)
			}
			cfg, err := loadConfig(cmd, needs...)
			if err != nil {
				return err
			}
			budget, err := bf.budget.parse()
			if err != nil {
				return err
			}
			o, closeInput, err := bf.openInput(args[0])
			if err != nil {
				return err
			}
			defer closeInput()
			ctx := cmd.Context()
			boundLoaderMemory()
			if dryRun {
				return dryRunLoad(ctx, cfg, o, cmd.OutOrStdout(), cmd.ErrOrStderr())
			}
			// The file first: a file with mistakes needs no Redis, and the user learns of them
			// at once.
			rep, err := validateFile(ctx, o, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			rdb, err := app.OpenRedis(ctx, cfg)
			if err != nil {
				return err
			}
			defer rdb.Close()
			pr, _ := o.priority() // checked by openInput
			enq := jobs.NewEnqueuer(rdb, jobs.EnqueuerOptions{Namespace: cfg.Namespace, Retention: cfg.Retention, Priority: pr})
			defer enq.Close()
			// The budget before the jobs: a worker may take the first job at once.
			if err := applyBudget(ctx, enq, o.Batch, budget, cfg, cmd.OutOrStdout()); err != nil {
				return err
			}
			rep, err = enqueueWithProgress(ctx, enq, o, rep, cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			printLoaded(cmd.OutOrStdout(), o, rep)
			return nil
		},
	}
	bf.register(cmd)
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "enqueue nothing; print counts per model and mode, cost and duration")
	return cmd
}

// loaderMemoryLimit bounds the load command's memory (see boundLoaderMemory).
const loaderMemoryLimit = 100 << 20

// boundLoaderMemory sets the garbage collector for a load, unless the user set GOMEMLIMIT or GOGC.
// The loader's live memory is small (the reader's count of distinct lines) but it allocates fast
// while parsing, and with the default GOGC its heap, and so its RSS, reaches twice the live size
// (docs/benchmarks.md, Loading, has the figures). A soft limit with GOGC off collects only when the limit nears:
// fewer collections than the default and a bounded footprint. A file with several million
// distinct lines needs more than the limit; the runtime then collects more often (it caps the
// collector at half the CPU) and goes over the limit rather than failing.
func boundLoaderMemory() {
	if os.Getenv("GOMEMLIMIT") != "" || os.Getenv("GOGC") != "" {
		return
	}
	debug.SetMemoryLimit(loaderMemoryLimit)
	debug.SetGCPercent(-1)
}

// loadWithProgress validates then enqueues a file, showing the progress of the enqueuing on
// errOut.
func loadWithProgress(ctx context.Context, enq *jobs.Enqueuer, o loadOptions, errOut io.Writer) (loadReport, error) {
	rep, err := validateFile(ctx, o, errOut)
	if err != nil {
		return rep, err
	}
	return enqueueWithProgress(ctx, enq, o, rep, errOut)
}

// enqueueWithProgress writes the rejects of a file validateFile reported on, then enqueues its
// good lines, showing the progress on errOut. Its callers have checked Redis (and run the key)
// first, so that a command that fails early leaves no rejects file behind.
func enqueueWithProgress(ctx context.Context, enq *jobs.Enqueuer, o loadOptions, rep loadReport, errOut io.Writer) (loadReport, error) {
	if err := writeRejects(o, rep); err != nil {
		return rep, err
	}
	ctr := newCounter(errOut, "enqueued", int64(rep.Valid), 5*time.Second)
	rep, err := enqueueFile(ctx, enq, o, rep, func(done int) { ctr.Set(int64(done)) })
	ctr.Finish()
	return rep, err
}

func printLoaded(out io.Writer, o loadOptions, rep loadReport) {
	fmt.Fprintf(out, "batch %s: %d jobs in %s (%d new, %d already loaded)", o.Batch, rep.Valid, o.name(), rep.Added, rep.Existing)
	if rep.Invalid > 0 {
		fmt.Fprintf(out, "; %d bad lines skipped, see %s", rep.Invalid, rep.RejectsPath)
	}
	fmt.Fprintln(out)
}

// planKey groups a dry run's jobs.
type planKey struct {
	model string
	edit  bool
}

// dryRunLoad reads the file once and reports what loading it would do.
func dryRunLoad(ctx context.Context, cfg config.Config, o loadOptions, out, errOut io.Writer) error {
	var known func([]jobs.Ref) ([]bool, error)
	if cfg.RedisURL != "" {
		rdb, err := app.OpenRedis(ctx, cfg)
		if err != nil {
			return err
		}
		defer rdb.Close()
		l := jobs.NewLedger(rdb, jobs.LedgerOptions{Namespace: cfg.Namespace})
		known = func(refs []jobs.Ref) ([]bool, error) { return l.Known(ctx, refs) }
	}
	plan := map[planKey]int{}
	var pending []jobs.Ref
	var pendingKeys []planKey
	existing := 0
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		var have []bool
		if known != nil {
			var err error
			if have, err = known(pending); err != nil {
				return err
			}
		}
		for i, k := range pendingKeys {
			if have != nil && have[i] {
				existing++
				continue
			}
			plan[k]++
		}
		pending, pendingKeys = pending[:0], pendingKeys[:0]
		return nil
	}
	var inputFails map[int]bool
	if o.CheckInputs {
		counted, err := scanFile(o, nil, func(*jobs.LineError) error { return nil })
		if err != nil {
			return usageErr(err)
		}
		fails, err := checkInputs(ctx, o, counted.Valid, errOut)
		if err != nil {
			return err
		}
		inputFails = make(map[int]bool, len(fails))
		for _, le := range fails {
			fmt.Fprintln(errOut, le.Error())
			inputFails[le.Line] = true
		}
	}
	item := func(it jobs.Item) error {
		if inputFails[it.Line] {
			return nil // listed above, and counted as bad below
		}
		model := it.Spec.Model
		if model == "" {
			model = "flux-kontext-pro" // Kie's default
		}
		pending = append(pending, jobs.Ref{Batch: it.Spec.Batch, ID: it.Spec.ID})
		pendingKeys = append(pendingKeys, planKey{model: model, edit: it.Spec.IsEdit()})
		if len(pending) == 1000 {
			return flush()
		}
		return nil
	}
	bad := func(le *jobs.LineError) error {
		fmt.Fprintln(errOut, le.Error())
		return nil
	}
	rep, err := scanFile(o, item, bad)
	if err == nil {
		err = flush()
	}
	if err != nil {
		return usageErr(err)
	}
	rep.Valid -= len(inputFails)
	rep.Invalid += len(inputFails)
	if rep.Invalid > 0 && !o.SkipInvalid {
		return usageErr(&badInputError{path: o.name(), n: rep.Invalid})
	}
	printPlan(out, cfg, o, rep, plan, existing, known != nil)
	return nil
}

func printPlan(out io.Writer, cfg config.Config, o loadOptions, rep loadReport, plan map[planKey]int, existing int, checked bool) {
	fresh := rep.Valid - existing
	fmt.Fprintf(out, "dry run: %s holds %d valid jobs for batch %s", o.name(), rep.Valid, o.Batch)
	switch {
	case checked:
		fmt.Fprintf(out, ": %d new, %d already loaded\n", fresh, existing)
	default:
		fmt.Fprintf(out, " (not checked against the ledger: REDIS_URL is not set, so all count as new)\n")
	}
	if rep.Invalid > 0 {
		fmt.Fprintf(out, "%d bad lines would be skipped (listed on stderr)\n", rep.Invalid)
	}
	models := map[string]bool{}
	for k := range plan {
		models[k.model] = true
	}
	names := make([]string, 0, len(models))
	for m := range models {
		names = append(names, m)
	}
	sort.Strings(names)
	priced := len(cfg.Prices) > 0
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "new jobs\tgenerate\tedit\ttotal\t")
	if priced {
		fmt.Fprint(tw, "credits\t")
	}
	fmt.Fprintln(tw)
	var gen, edit int
	var credits float64
	unpriced := []string{}
	for _, m := range names {
		g, e := plan[planKey{m, false}], plan[planKey{m, true}]
		gen, edit = gen+g, edit+e
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t", m, g, e, g+e)
		if priced {
			p, ok := cfg.Prices[m]
			if ok {
				fmt.Fprintf(tw, "%s\t", formatCredits(p*float64(g+e)))
				credits += p * float64(g+e)
			} else {
				fmt.Fprint(tw, "?\t")
				unpriced = append(unpriced, m)
			}
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintf(tw, "total\t%d\t%d\t%d\t", gen, edit, gen+edit)
	if priced {
		fmt.Fprintf(tw, "%s\t", formatCredits(credits))
	}
	fmt.Fprintln(tw)
	_ = tw.Flush()

	switch {
	case !priced:
		fmt.Fprintln(out, "cost: not estimated. Kie does not publish its prices; give yours with --price "+
			"flux-kontext-pro=N,flux-kontext-max=M (or KONTEXTQ_PRICES)")
	case len(unpriced) > 0:
		fmt.Fprintf(out, "cost: at least %s credits; no --price for %s. Kie does not publish its prices: these are the ones configured\n",
			formatCredits(credits), strings.Join(unpriced, ", "))
	default:
		fmt.Fprintf(out, "cost: %s credits at the configured prices (%s); Kie does not publish its prices, so check them against your account\n",
			formatCredits(credits), formatPrices(cfg.Prices))
	}
	if cfg.GenerationRetries > 0 {
		fmt.Fprintf(out, "      a job whose generation fails is submitted again, up to %d more time(s), each paid\n", cfg.GenerationRetries)
	}
	if d, ok := cfg.Rate.Time(int64(gen + edit)); ok && gen+edit > 0 {
		fmt.Fprintf(out, "time: about %s at --rate %s (Kie's limit per account, shared by every worker)\n", human.Duration(d), cfg.Rate)
	}
}

func formatCredits(v float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
}

func formatPrices(p map[string]float64) string {
	names := make([]string, 0, len(p))
	for m := range p {
		names = append(names, m)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, m := range names {
		parts[i] = m + "=" + formatCredits(p[m])
	}
	return strings.Join(parts, ", ")
}
