package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/spf-milter/spf-milter/config"
)

const validateUsage = `Usage: spf-milter validate [--config PATH]

Loads and validates a config file (default ` + config.DefaultPath + `).
When it is valid, prints the effective configuration, every key with its
defaults filled in, as YAML that loads again, and exits 0. Otherwise prints
every problem found on stderr, one per line as FILE:LINE: KEY: ..., and
exits 1. A bad command line exits 2.

Flags:
`

func runValidate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	// One line on a bad flag, as every subcommand gives, rather than the
	// flag package's error and whole usage.
	fs.SetOutput(io.Discard)
	path := fs.String("config", config.DefaultPath, "config file `path`")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, validateUsage)
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return 0
		}
		return usageError(stderr, "validate", "%v", err)
	}
	if fs.NArg() > 0 {
		return usageError(stderr, "validate", "unexpected argument %q (the file is given with --config)", fs.Arg(0))
	}
	if *path == "" {
		return usageError(stderr, "validate", "--config needs a file path")
	}

	cfg, err := config.Load(*path)
	var cerr *config.Error
	switch {
	case errors.As(err, &cerr):
		for _, p := range cerr.Problems {
			fmt.Fprintln(stderr, p.String())
		}
		noun := "problem"
		if len(cerr.Problems) > 1 {
			noun = "problems"
		}
		fmt.Fprintf(stderr, "spf-milter validate: %s: %d %s\n", *path, len(cerr.Problems), noun)
		return 1
	case err != nil:
		// Unreadable: the error names the file already.
		fmt.Fprintf(stderr, "spf-milter validate: %v\n", err)
		return 1
	}
	if _, err := stdout.Write(cfg.YAML()); err != nil {
		fmt.Fprintf(stderr, "spf-milter validate: %v\n", err)
		return 1
	}
	return 0
}
