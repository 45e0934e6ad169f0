package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestCheckRules: check --config applies the rules with --listener and
// --client-name, and shows the rule and the shadow action.
func TestCheckRules(t *testing.T) {
	t.Parallel()
	dns := testDNS(t)
	path := checkConfigFile(t, dns,
		"rules:",
		"  - name: submission",
		"    when: {listener: [submission]}",
		"    skip: true",
		"  - name: forwarder",
		"    when: {client_name: [.fwd.example]}",
		"    mailfrom: {fail: tempfail}",
		"  - name: fail-grace",
		"    when: {sender_domain: [example.org]}",
		"    until: 2999-01-01",
		"    mailfrom: {fail: accept}",
		"shadow:",
		"  policy: {mailfrom: {fail: quarantine}}",
	)
	fail := []string{"check", "--config", path, "--ip", "198.51.100.7", "--sender", "joe@example.org"}
	tests := []struct {
		name                  string
		args                  []string
		action, rule, skipped string
		shadow                string
		headers               bool
		text                  []string
	}{
		{"sender domain rule", nil, "accept", "fail-grace", "", "quarantine", true,
			[]string{"\nAction: accept\n", "\nRule: fail-grace (its policy decided the action), until 2999-01-01\n", "\nShadow action: quarantine (never applied)\n"}},
		{"listener skip", []string{"--listener", "submission"}, "accept", "submission", "rule", "", false,
			[]string{"\nAction: accept (skipped: rule submission; the message is not checked and gets no header)\n"}},
		{"other listener", []string{"--listener", "smtpd"}, "accept", "fail-grace", "", "quarantine", true, nil},
		{"client name given", []string{"--client-name", "MX.fwd.example."}, "tempfail", "forwarder", "", "quarantine", true,
			[]string{"\nAction: tempfail\n", "\nRule: forwarder (its policy decided the action)\n"}},
		{"client name none", []string{"--client-name", ""}, "accept", "fail-grace", "", "quarantine", true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			args := append(append([]string{}, fail...), tt.args...)
			code, stdout, stderr := runCmd(append(args, "--json")...)
			if code != 0 || stderr != "" {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			var got struct {
				Action       string            `json:"action"`
				Rule         *string           `json:"rule"`
				Skipped      *string           `json:"skipped"`
				ShadowAction *string           `json:"shadow_action"`
				Headers      []json.RawMessage `json:"headers"`
			}
			if err := json.Unmarshal([]byte(stdout), &got); err != nil {
				t.Fatal(err)
			}
			if got.Rule == nil || got.Skipped == nil || got.ShadowAction == nil {
				t.Fatalf("rule, skipped or shadow_action missing:\n%s", stdout)
			}
			if got.Action != tt.action || *got.Rule != tt.rule || *got.Skipped != tt.skipped || *got.ShadowAction != tt.shadow {
				t.Errorf("action %q rule %q skipped %q shadow %q; want %q %q %q %q",
					got.Action, *got.Rule, *got.Skipped, *got.ShadowAction, tt.action, tt.rule, tt.skipped, tt.shadow)
			}
			if (len(got.Headers) > 0) != tt.headers {
				t.Errorf("headers %d, want some: %v", len(got.Headers), tt.headers)
			}
			code, stdout, stderr = runCmd(args...)
			if code != 0 || stderr != "" {
				t.Fatalf("text: exit %d, stderr %q", code, stderr)
			}
			for _, w := range tt.text {
				if !strings.Contains(stdout, w) {
					t.Errorf("text output lacks %q:\n%s", w, stdout)
				}
			}
		})
	}
	for _, flag := range []string{"--listener", "--client-name"} {
		code, _, stderr := runCmd("check", "--ip", "192.0.2.1", "--sender", "a@example.org", flag, "x")
		if code != exitUsage || !strings.Contains(stderr, flag+" needs --config") {
			t.Errorf("%s without --config: exit %d, stderr %q", flag, code, stderr)
		}
	}
}
