package config

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/spf-milter/spf-milter/spf"
)

// YAML returns the effective configuration as a config file: every key,
// with the defaults filled in, in the order of the example file. Parse
// reads it back to an equal Config, so that "spf-milter validate" output
// can be saved and edited.
func (c *Config) YAML() []byte {
	dnsServers := make([]*yaml.Node, len(c.DNS.Servers))
	for i, s := range c.DNS.Servers {
		dnsServers[i] = str(s)
	}
	replies := mapNode(false)
	for _, r := range spf.Results {
		if t, ok := c.Replies[r]; ok {
			replies.Content = append(replies.Content, str(string(r)), str(t))
		}
	}
	root := mapNode(false,
		"listen", str(c.Listen),
		"socket_mode", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Style: yaml.DoubleQuotedStyle,
			Value: fmt.Sprintf("%04o", c.SocketMode.Perm())},
		"authserv_id", str(c.AuthservID),
		"receiver", str(c.Receiver),
		"dns", mapNode(false,
			"servers", seqNode(dnsServers...),
			"timeout", duration(c.DNS.Timeout),
			"check_timeout", duration(c.DNS.CheckTimeout),
			"cache_size", integer(c.DNS.CacheSize),
			"cache_bytes", str(formatSize(c.DNS.CacheBytes)),
		),
		"policy", mapNode(false,
			"mailfrom", policyNode(c.Policy.MailFrom),
			"helo", policyNode(c.Policy.HELO),
		),
		"trusted_networks", networksNode(c.TrustedNetworks),
		"skip_authenticated", boolean(c.SkipAuthenticated),
		"dry_run", boolean(c.DryRun),
		"headers", mapNode(true,
			"received_spf", boolean(c.Headers.ReceivedSPF),
			"authentication_results", boolean(c.Headers.AuthenticationResults),
			"remove_forged", boolean(c.Headers.RemoveForged),
		),
		"log", mapNode(true,
			"format", str(c.Log.Format),
			"level", str(c.Log.Level),
		),
		"explanation", str(c.Explanation),
		"replies", replies,
		"skip_senders", stringsNode(c.SkipSenders),
		"skip_clients", networksNode(c.SkipClients),
		"never_refuse", stringsNode(c.NeverRefuse),
		"session", mapNode(true,
			"idle_timeout", duration(c.Session.IdleTimeout),
			"max_duration", duration(c.Session.MaxDuration),
		),
		"metrics", mapNode(true,
			"listen", str(c.Metrics.Listen),
		),
		"why", mapNode(false,
			"listen", str(c.Why.Listen),
			"url", str(c.Why.URL),
			"rate", integer(c.Why.Rate),
			"concurrent", integer(c.Why.Concurrent),
			"cache", duration(c.Why.Cache),
		),
		"decision_log", mapNode(true,
			"path", str(c.DecisionLog.Path),
			"max_size", str(formatSize(c.DecisionLog.MaxSize)),
			"keep", integer(c.DecisionLog.Keep),
		),
	)
	var b strings.Builder
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		// The tree is built from strings and known tags only; the encoder
		// cannot refuse it.
		panic("config: encoding YAML: " + err.Error())
	}
	if err := enc.Close(); err != nil {
		panic("config: encoding YAML: " + err.Error())
	}
	return []byte(b.String())
}

// str is a string scalar; the encoder quotes it when its plain form would
// read back as another type.
func str(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}

func boolean(b bool) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: fmt.Sprint(b)}
}

func integer(n int) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.Itoa(n)}
}

// duration writes d the way a person would: 5m rather than 5m0s.
func duration(d time.Duration) *yaml.Node {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return str(s)
}

// mapNode builds a mapping from alternating key names and value nodes.
func mapNode(flow bool, kv ...any) *yaml.Node {
	n := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	if flow {
		n.Style = yaml.FlowStyle
	}
	for i := 0; i+1 < len(kv); i += 2 {
		n.Content = append(n.Content, str(kv[i].(string)), kv[i+1].(*yaml.Node))
	}
	return n
}

// seqNode is a list in flow style ([a, b]), as short lists are written by
// hand.
func seqNode(items ...*yaml.Node) *yaml.Node {
	return &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Style: yaml.FlowStyle, Content: items}
}

func stringsNode(ss []string) *yaml.Node {
	items := make([]*yaml.Node, len(ss))
	for i, s := range ss {
		items[i] = str(s)
	}
	return seqNode(items...)
}

func networksNode(ps []netip.Prefix) *yaml.Node {
	items := make([]*yaml.Node, len(ps))
	for i, p := range ps {
		items[i] = str(p.String())
	}
	return seqNode(items...)
}

// policyNode writes one identity's policy on one line, results in RFC
// order.
func policyNode(m map[spf.Result]Action) *yaml.Node {
	n := mapNode(true)
	for _, r := range spf.Results {
		if a, ok := m[r]; ok {
			n.Content = append(n.Content, str(string(r)), str(string(a)))
		}
	}
	return n
}
