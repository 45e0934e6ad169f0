package config

import (
	"fmt"
	"io/fs"
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
	root := mapNode(false)
	for _, e := range layout {
		if e.setting != nil {
			root.Content = append(root.Content, str(e.name), e.setting.print(c))
			continue
		}
		sec := mapNode(e.section.flow)
		for _, s := range e.keys {
			sec.Content = append(sec.Content, str(s.name()), s.print(c))
		}
		root.Content = append(root.Content, str(e.name), sec)
	}
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

// modeNode writes a permission mode in quotes, as it must be read back.
func modeNode(m fs.FileMode) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Style: yaml.DoubleQuotedStyle, Value: fmt.Sprintf("%04o", m.Perm())}
}

// sizeNode writes a size in bytes in its largest whole unit.
func sizeNode(n int64) *yaml.Node {
	return str(formatSize(n))
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

// repliesNode writes the reply templates given, results in RFC order.
func repliesNode(m map[spf.Result]string) *yaml.Node {
	n := mapNode(false)
	for _, r := range spf.Results {
		if t, ok := m[r]; ok {
			n.Content = append(n.Content, str(string(r)), str(t))
		}
	}
	return n
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
