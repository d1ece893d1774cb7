// Package descriptors reads envoyproxy/ratelimit's YAML descriptor files and
// matches Envoy's rate-limit descriptors against them. It knows nothing of
// gRPC, HTTP or the store: it turns files into limits and a request's
// entries into the limit and the counter key that decide it.
package descriptors

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Units and their windows, as envoyproxy/ratelimit divides time: a month is
// 30 days and a year 365, and every window is aligned on the Unix epoch.
var units = map[string]int64{
	"second": 1,
	"minute": 60,
	"hour":   3600,
	"day":    86400,
	"week":   7 * 86400,
	"month":  30 * 86400,
	"year":   365 * 86400,
}

// Algorithms accepted by the `algorithm` extension; the node validates the
// names against its own list too.
var algorithms = []string{"fixed_window", "sliding_window", "sliding_log", "token_bucket"}

// maxAlgorithmWindow bounds the window of the algorithms other than
// fixed_window, whose arithmetic must stay exact in Redis' doubles.
const maxAlgorithmWindow = 86400

// maxExactLimit bounds requests_per_unit for those algorithms likewise.
const maxExactLimit = 100_000_000

// Bounds on what a descriptor can match. A request's descriptor has at most
// MaxEntries entries and each key or value at most MaxEntryBytes (the node
// refuses larger requests), so a file that nests deeper or names longer keys
// describes something no request can reach: it is refused as a mistake. The
// depth bound also keeps a hostile file from costing memory quadratic in its
// nesting, as every level's YAML path and counter key extend its parent's.
const (
	MaxEntries    = 32
	MaxEntryBytes = 512
	// MaxFileBytes bounds one file: 10,000 descriptors take about 1 MiB.
	MaxFileBytes = 16 << 20
)

// Bounds on what a set of files may cost beyond their own size.
const (
	// maxNameBytes bounds the descriptors' full names (domain.key_value…),
	// which the node keeps per limit. Each extends its parent's, so 1 MiB
	// of short descriptors under a long 31-level chain used to hold 280 MiB
	// of names. A million descriptors with 64-byte names fit.
	maxNameBytes = 64 << 20
	// maxAliasNodes bounds what YAML aliases add to a file: the nodes read
	// through aliases beyond those written. Without it, nested aliases
	// ("billion laughs") make a kilobyte expand without end.
	maxAliasNodes = 200_000
)

// Limit is one rate_limit block.
type Limit struct {
	ID              int    // index in Config.Limits
	Domain          string // the file's domain
	FullKey         string // domain.key_value.key: envoyproxy/ratelimit's stat key
	Name            string // rate_limit.name, may be empty
	Replaces        []string
	Unit            string // second … year; empty when unlimited
	WindowSeconds   int64
	RequestsPerUnit uint32
	Unlimited       bool
	Algorithm       string
	Shadow          bool
	DetailedMetric  bool
	File            string // base name of the file
	Line            int
	Path            string // YAML path of the rate_limit block
}

// descriptor is one node of a domain's tree.
type descriptor struct {
	key, value     string
	wildcard       bool // value ends in *; prefix is value without it
	prefix         string
	limit          *Limit
	shadow         bool
	shareThreshold bool
	valueToMetric  bool
	detailedMetric bool
	children       map[childID]*descriptor
	wildcards      []*descriptor // in file order
	file           string
	line           int
}

// Config is every file of a directory, loaded and checked.
type Config struct {
	Domains map[string]*Domain
	Limits  []*Limit
	Files   []string // base names, sorted
}

// Domain is the descriptors of one domain.
type Domain struct {
	Name string
	File string
	root descriptor
}

// Load reads every *.yaml file of dir. Every problem of every file is
// reported, each as "file:line: yaml.path: what".
func Load(dir string, opt Options) (*Config, error) {
	names, err := Files(dir)
	if err != nil {
		return nil, err
	}
	files := make(map[string][]byte, len(names))
	for _, name := range names {
		data, err := readFile(name)
		if err != nil {
			return nil, fmt.Errorf("cannot read envoy config: %w", err)
		}
		files[filepath.Base(name)] = data
	}
	return Parse(files, opt)
}

// readFile reads at most MaxFileBytes of name, and fails on a larger file
// rather than hold all of it (a device or a runaway generator in the
// directory).
func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileBytes {
		return nil, fmt.Errorf("%s: larger than %d MiB", filepath.Base(name), MaxFileBytes>>20)
	}
	return data, nil
}

// Files lists the descriptor files of dir, sorted: every *.yaml except
// dot files (editors' swap files, a ConfigMap's hidden copies).
func Files(dir string) ([]string, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, fmt.Errorf("cannot list %s: %w", dir, err)
	}
	out := names[:0]
	for _, name := range names {
		if !strings.HasPrefix(filepath.Base(name), ".") {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Parse checks and compiles files (base name -> content).
func Parse(files map[string][]byte, opt Options) (*Config, error) {
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	c := &Config{Domains: map[string]*Domain{}, Files: names}
	var errs []error
	nameBytes := 0
	for _, name := range names {
		p := &parser{file: name, cfg: c, merge: opt.MergeDomains, nameBytes: nameBytes}
		p.parse(files[name])
		errs = append(errs, p.errs...)
		nameBytes = p.nameBytes
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// Options change how files load.
type Options struct {
	// MergeDomains lets several files add to one domain (envoyproxy/
	// ratelimit's MERGE_DOMAIN_CONFIG); otherwise a second file with a
	// domain already loaded is an error.
	MergeDomains bool
}

type parser struct {
	merge  bool
	file   string
	domain string
	cfg    *Config
	errs   []error
	// The costs charged against maxNameBytes (every file's) and
	// maxAliasNodes (this file's); over is set once either is spent, and
	// the walk then stops.
	nameBytes   int
	visits      int
	visitBudget int
	over        bool
}

func (p *parser) fail(n *yaml.Node, path, format string, args ...any) {
	if p.over {
		return // the walk stopped part-way: what it missed is no error
	}
	line := 0
	if n != nil {
		line = n.Line
	}
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	p.errs = append(p.errs, fmt.Errorf("%s:%d: %s", p.file, line, msg))
}

func (p *parser) parse(data []byte) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		// yaml.v3 says "yaml: line N: ..." already.
		p.errs = append(p.errs, fmt.Errorf("%s: %s", p.file, strings.TrimPrefix(err.Error(), "yaml: ")))
		return
	}
	if len(doc.Content) == 0 {
		p.fail(&doc, "", "empty file: want a mapping with domain and descriptors")
		return
	}
	p.visitBudget = p.link(&doc) + maxAliasNodes
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		p.fail(root, "", "want a mapping with domain and descriptors")
		return
	}
	var domain string
	var domainNode, descs *yaml.Node
	p.fields(root, "", func(key string, k, v *yaml.Node) {
		switch key {
		case "domain":
			domain, domainNode = p.str(v, "domain"), v
		case "descriptors":
			descs = v
		default:
			p.fail(k, key, "unknown key (want domain or descriptors)")
		}
	})
	if domain == "" {
		p.fail(orNode(domainNode, root), "domain", "must be a non-empty string")
		return
	}
	if len(domain) > MaxEntryBytes {
		p.fail(domainNode, "domain", "longer than %d bytes: no request could name it", MaxEntryBytes)
		return
	}
	p.domain = domain
	d, dup := p.cfg.Domains[domain]
	switch {
	case dup && !p.merge:
		p.fail(domainNode, "domain", "duplicate domain %q, already defined in %s (envoy_merge_domains merges them)", domain, d.File)
		return
	case !dup:
		d = &Domain{Name: domain, File: p.file}
		d.root.children = map[childID]*descriptor{}
		p.cfg.Domains[domain] = d
	}
	// With merging, a later file adds descriptors to the domain; one that
	// is already there is a duplicate, as within one file.
	if descs != nil {
		p.descriptors(&d.root, descs, "descriptors", domain, 1)
	}
}

// link replaces every YAML alias (*name) by the node its anchor (&name)
// marks, as envoyproxy/ratelimit's YAML library expands them, and returns
// the number of nodes written. The tree becomes a graph that shares the
// anchored nodes, so an error inside one names the anchor's line, and its
// YAML path names where the walk reached it. yaml.v3 refuses an anchor
// that contains its own alias, so the graph has no cycle; the walk's visit
// budget bounds what the sharing multiplies.
func (p *parser) link(n *yaml.Node) int {
	count := 1
	for i, c := range n.Content {
		count += p.link(c)
		if c.Kind == yaml.AliasNode && c.Alias != nil {
			n.Content[i] = c.Alias
		}
	}
	return count
}

// visit charges one node of the walk against the file's budget, and says
// whether the walk may go on.
func (p *parser) visit(n *yaml.Node, path string) bool {
	if p.over {
		return false
	}
	if p.visits++; p.visits > p.visitBudget {
		p.fail(n, path, "YAML aliases expand to more than %d nodes beyond the file's own; write the values out", maxAliasNodes)
		p.over = true
		return false
	}
	return true
}

// name charges a descriptor's full name against every file's budget.
func (p *parser) name(n *yaml.Node, path, full string) bool {
	if p.over {
		return false
	}
	if p.nameBytes += len(full); p.nameBytes > maxNameBytes {
		p.fail(n, path, "the descriptors' full names (domain.key_value…) add up to more than %d MiB; shorten the keys or nest less", maxNameBytes>>20)
		p.over = true
		return false
	}
	return true
}

func orNode(n, alt *yaml.Node) *yaml.Node {
	if n != nil {
		return n
	}
	return alt
}

// fields calls f for each key of a mapping, refusing duplicate keys. A
// merge key (<<: *anchor, or a list of them) adds the keys of the mappings
// it names that the mapping does not set itself; of several, the first to
// set a key wins, as YAML's merge key type says.
func (p *parser) fields(n *yaml.Node, path string, f func(key string, k, v *yaml.Node)) {
	p.merged(n, path, map[string]bool{}, f)
}

// merged calls f for the keys of n not in seen, then for those of the
// mappings n merges.
func (p *parser) merged(n *yaml.Node, path string, seen map[string]bool, f func(key string, k, v *yaml.Node)) {
	var merges []*yaml.Node
	own := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		at := join(path, k.Value)
		if !p.visit(k, at) {
			return
		}
		switch {
		case k.Kind != yaml.ScalarNode:
			p.fail(k, path, "keys must be strings")
		case k.Tag == "!!merge":
			merges = append(merges, v)
		case own[k.Value]:
			p.fail(k, at, "duplicate key")
		default:
			own[k.Value] = true
			if !seen[k.Value] { // else set by the mapping itself or an earlier merge
				seen[k.Value] = true
				f(k.Value, k, v)
			}
		}
	}
	for _, m := range merges {
		from := []*yaml.Node{m}
		if m.Kind == yaml.SequenceNode {
			from = m.Content
		}
		for _, src := range from {
			if src.Kind != yaml.MappingNode {
				p.fail(src, join(path, "<<"), "a merge key takes a mapping or a list of mappings")
				continue
			}
			p.merged(src, path, seen, f)
		}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (p *parser) str(n *yaml.Node, path string) string {
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!str" && n.Tag != "!!int" && n.Tag != "!!float") {
		p.fail(n, path, "must be a string")
		return ""
	}
	return n.Value
}

func (p *parser) boolean(n *yaml.Node, path string) bool {
	var b bool
	if n.Kind != yaml.ScalarNode || n.Tag != "!!bool" || n.Decode(&b) != nil {
		p.fail(n, path, "must be true or false, got %q", n.Value)
		return false
	}
	return b
}

// descriptors reads a list of descriptors at depth (1 for the top level).
func (p *parser) descriptors(parent *descriptor, n *yaml.Node, path, fullKey string, depth int) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.SequenceNode {
		p.fail(n, path, "must be a list of descriptors")
		return
	}
	if depth > MaxEntries {
		p.fail(n, path, "nested deeper than %d levels: a request's descriptor has at most %d entries, so none could match", MaxEntries, MaxEntries)
		return
	}
	for i, item := range n.Content {
		at := path + "[" + strconv.Itoa(i) + "]"
		if !p.visit(item, at) {
			return
		}
		if item.Kind != yaml.MappingNode {
			p.fail(item, at, "must be a mapping with a key")
			continue
		}
		d := &descriptor{file: p.file, line: item.Line, children: map[childID]*descriptor{}}
		var rl, kids, keyNode *yaml.Node
		p.fields(item, at, func(key string, k, v *yaml.Node) {
			switch key {
			case "key":
				d.key, keyNode = p.str(v, at+".key"), v
			case "value":
				d.value = p.str(v, at+".value")
			case "rate_limit":
				rl = v
			case "descriptors":
				kids = v
			case "shadow_mode", "detailed_metric", "value_to_metric", "share_threshold":
				b := p.boolean(v, at+"."+key)
				switch key {
				case "shadow_mode":
					d.shadow = b
				case "detailed_metric":
					d.detailedMetric = b
				case "value_to_metric":
					d.valueToMetric = b
				case "share_threshold":
					d.shareThreshold = b
				}
			default:
				p.fail(k, join(at, key), "unknown key (want key, value, rate_limit, descriptors, shadow_mode, detailed_metric, value_to_metric or share_threshold)")
			}
		})
		if d.key == "" {
			p.fail(orNode(keyNode, item), at+".key", "descriptor has no key")
			continue
		}
		if len(d.key) > MaxEntryBytes || len(d.value) > MaxEntryBytes {
			p.fail(item, at, "key or value longer than %d bytes: no request could match it", MaxEntryBytes)
			continue
		}
		if strings.HasSuffix(d.value, "*") {
			d.wildcard, d.prefix = true, strings.TrimSuffix(d.value, "*")
		}
		if d.shareThreshold && !d.wildcard {
			p.fail(item, at+".share_threshold", "applies only to a wildcard value ending in *, got value %q", d.value)
		}
		name := d.key
		if d.value != "" {
			name += "_" + d.value
		}
		full := fullKey + "." + name
		if !p.name(item, at, full) {
			return
		}
		mapKey := childKey(d.key, d.value, d.value != "")
		if prev, dup := parent.children[mapKey]; dup {
			p.fail(item, at, "duplicate descriptor %q (first at %s:%d)", full, prev.file, prev.line)
			continue
		}
		if rl != nil {
			d.limit = p.rateLimit(rl, at+".rate_limit", full)
		}
		if d.limit != nil {
			d.limit.Shadow = d.shadow
			d.limit.DetailedMetric = d.detailedMetric
		}
		if kids != nil {
			p.descriptors(d, kids, at+".descriptors", full, depth+1)
		}
		parent.children[mapKey] = d
		if d.wildcard {
			parent.wildcards = append(parent.wildcards, d)
		}
	}
}

// childID names a child: by key and value, or by key alone (a map key of
// two strings hashes without building one).
type childID struct {
	key, value string
	hasValue   bool
}

func childKey(key, value string, hasValue bool) childID {
	return childID{key, value, hasValue}
}

func (p *parser) rateLimit(n *yaml.Node, path, fullKey string) *Limit {
	if n.Kind != yaml.MappingNode {
		p.fail(n, path, "must be a mapping with unit and requests_per_unit, or unlimited: true")
		return nil
	}
	l := &Limit{ID: len(p.cfg.Limits), Domain: p.domain, FullKey: fullKey,
		File: p.file, Line: n.Line, Path: path, Algorithm: "fixed_window"}
	p.cfg.Limits = append(p.cfg.Limits, l)
	var unitNode, rpuNode *yaml.Node
	p.fields(n, path, func(key string, k, v *yaml.Node) {
		at := path + "." + key
		switch key {
		case "unit":
			l.Unit, unitNode = strings.ToLower(p.str(v, at)), v
		case "requests_per_unit":
			rpuNode = v
			var u uint64
			if v.Kind != yaml.ScalarNode || v.Tag != "!!int" || v.Decode(&u) != nil || u > math.MaxUint32 {
				p.fail(v, at, "must be an integer from 0 to %d, got %q", uint32(math.MaxUint32), v.Value)
				return
			}
			l.RequestsPerUnit = uint32(u)
		case "unlimited":
			l.Unlimited = p.boolean(v, at)
		case "name":
			l.Name = p.str(v, at)
		case "replaces":
			l.Replaces = p.replaces(v, at)
		case "algorithm":
			l.Algorithm = p.str(v, at)
			if !contains(algorithms, l.Algorithm) {
				p.fail(v, at, "unknown algorithm %q (want %s)", l.Algorithm, strings.Join(algorithms, ", "))
			}
		default:
			p.fail(k, at, "unknown key (want unit, requests_per_unit, unlimited, name, replaces or algorithm)")
		}
	})
	for _, r := range l.Replaces {
		if r == l.Name && r != "" {
			p.fail(n, path+".replaces", "must not name this rate_limit itself (%q)", r)
		}
	}
	if l.Unlimited {
		if unitNode != nil {
			p.fail(unitNode, path+".unit", "must not be set when unlimited is true")
		}
		return l
	}
	if unitNode == nil {
		p.fail(n, path+".unit", "missing (want second, minute, hour, day, week, month or year)")
		return l
	}
	w, ok := units[l.Unit]
	if !ok {
		p.fail(unitNode, path+".unit", "invalid unit %q (want second, minute, hour, day, week, month or year)", unitNode.Value)
		return l
	}
	l.WindowSeconds = w
	if rpuNode == nil {
		p.fail(n, path+".requests_per_unit", "missing")
	}
	if l.Algorithm != "fixed_window" {
		if w > maxAlgorithmWindow {
			p.fail(unitNode, path+".unit", "algorithm %s supports windows up to a day; use fixed_window for %s", l.Algorithm, l.Unit)
		}
		if l.RequestsPerUnit > maxExactLimit {
			p.fail(rpuNode, path+".requests_per_unit", "algorithm %s supports at most %d", l.Algorithm, maxExactLimit)
		}
	}
	return l
}

func (p *parser) replaces(n *yaml.Node, path string) []string {
	if n.Kind != yaml.SequenceNode {
		p.fail(n, path, "must be a list of {name: ...}")
		return nil
	}
	var out []string
	for i, item := range n.Content {
		at := path + "[" + strconv.Itoa(i) + "]"
		if !p.visit(item, at) {
			return nil
		}
		if item.Kind != yaml.MappingNode {
			p.fail(item, at, "must be a mapping with a name")
			continue
		}
		name := ""
		p.fields(item, at, func(key string, k, v *yaml.Node) {
			if key != "name" {
				p.fail(k, join(at, key), "unknown key (want name)")
				return
			}
			name = p.str(v, at+".name")
		})
		if name == "" {
			p.fail(item, at+".name", "must be a non-empty string")
			continue
		}
		out = append(out, name)
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
