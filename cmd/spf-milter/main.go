// Command spf-milter checks mail senders against their domains' SPF policy
// (RFC 7208). Each task is a subcommand; "spf-milter help" lists them.
package main

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// exitUsage is the exit status for a command line that cannot be run, as
// opposed to a check that ran, whatever its result (0), or a failure to
// set one up (1).
const exitUsage = 2

// command is one subcommand. run gets the arguments after the
// subcommand's name and returns the process exit status.
type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

// commands lists the subcommands in the order help shows them. It is built
// by a function because help refers to it.
func commands() []command {
	return []command{
		{"serve", "run the milter daemon", runServe},
		{"check", "check one client IP and sender against SPF, and explain the result", runCheck},
		{"validate", "check a config file and print the effective configuration", runValidate},
		{"replay", "show what a config would change, replaying the decision log", runReplay},
		{"version", "print the version", runVersion},
		{"help", "show help for spf-milter or one of its commands", runHelp},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches args (without the program name) to a subcommand; it is
// main without the process, so tests can drive it.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		writeUsage(stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help":
		name = "help"
	case "-version", "--version":
		name = "version"
	}
	for _, c := range commands() {
		if c.name == name {
			return c.run(args[1:], stdout, stderr)
		}
	}
	return usageError(stderr, "", "unknown command %q", args[0])
}

// usageError reports a bad command line on one line of stderr and returns
// exitUsage. cmd is the subcommand, or "" for the program itself.
func usageError(stderr io.Writer, cmd, format string, args ...any) int {
	prog, helpCmd := "spf-milter", "spf-milter help"
	if cmd != "" {
		prog, helpCmd = "spf-milter "+cmd, "spf-milter "+cmd+" -h"
	}
	msg := fmt.Sprintf(format, args...)
	// One line whatever the input: a flag value may hold a newline.
	msg = strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(msg)
	fmt.Fprintf(stderr, "%s: %s (run '%s' for usage)\n", prog, msg, helpCmd)
	return exitUsage
}

func writeUsage(w io.Writer) {
	fmt.Fprintln(w, "spf-milter checks mail senders against SPF (RFC 7208).")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: spf-milter <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'spf-milter <command> -h' for a command's flags.")
}

func runHelp(args []string, stdout, stderr io.Writer) int {
	switch len(args) {
	case 0:
		writeUsage(stdout)
		return 0
	case 1:
		if args[0] == "help" {
			writeUsage(stdout)
			return 0
		}
		for _, c := range commands() {
			if c.name == args[0] {
				return c.run([]string{"-h"}, stdout, stderr)
			}
		}
		return usageError(stderr, "help", "unknown command %q", args[0])
	default:
		return usageError(stderr, "help", "too many arguments")
	}
}
