// Package integration tests spf-milter end to end with the real programs
// from Debian's packages: NSD serves the test zones as the milter's only
// resolver, the spf-milter binary built from this checkout runs with a
// config each test writes, and Postfix (and Sendmail) hand it real SMTP
// sessions. Every program is started by the tests as a child process on
// loopback ports and stopped by its PID.
//
// The package holds tests only. When a program is missing the tests skip,
// naming the Debian packages to install (scripts/test.sh installs them);
// in CI (CI=true) a missing program is a failure instead.
package integration
