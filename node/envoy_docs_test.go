package node

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3" // typed_config types
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

const envoyDoc = "../docs/envoy.md"

// TestEnvoyDocSnippets loads docs/envoy.md's Envoy and Istio snippets as
// Envoy loads its configuration: YAML read as proto3 JSON into the v3 API's
// generated types (an unknown field or a wrong type is an error), every
// typed_config unpacked into its registered type, and every message checked
// by the API's own validation rules. No Envoy binary runs here, so this is
// as close as the tests get to one reading the snippets.
func TestEnvoyDocSnippets(t *testing.T) {
	doc, err := os.ReadFile(envoyDoc)
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(doc), -1)
	checked := map[string]int{}
	for _, b := range blocks {
		var top map[string]any
		if err := yaml.Unmarshal([]byte(b[1]), &top); err != nil {
			t.Fatalf("%s: a yaml block does not parse: %v\n%s", envoyDoc, err, b[1])
		}
		switch {
		case top["http_filters"] != nil:
			loadEach(t, "http_filters", top["http_filters"], func() proto.Message { return &hcmv3.HttpFilter{} })
			loadEach(t, "clusters", top["clusters"], func() proto.Message { return &clusterv3.Cluster{} })
			checked["envoy"]++
		case top["routes"] != nil:
			loadEach(t, "routes", top["routes"], func() proto.Message { return &routev3.Route{} })
			checked["routes"]++
		case top["kind"] == "EnvoyFilter":
			patches, _ := dig(top, "spec", "configPatches").([]any)
			for i, p := range patches {
				p, _ := p.(map[string]any)
				value := dig(p, "patch", "value")
				switch p["applyTo"] {
				case "HTTP_FILTER":
					loadEach(t, "configPatches.patch.value", []any{value}, func() proto.Message { return &hcmv3.HttpFilter{} })
				case "VIRTUAL_HOST":
					// A MERGE patch is a part of a virtual host: its rate_limits.
					loadEach(t, "configPatches.patch.value.rate_limits", dig(value, "rate_limits"), func() proto.Message { return &routev3.RateLimit{} })
				default:
					t.Errorf("%s: EnvoyFilter patch %d applies to %v, which this test does not load", envoyDoc, i, p["applyTo"])
				}
				checked["istio"]++
			}
		}
	}
	if checked["envoy"] != 1 || checked["routes"] != 1 || checked["istio"] != 2 {
		t.Fatalf("%s: loaded %v; want the Envoy filters and cluster, the routes and the two Istio patches", envoyDoc, checked)
	}
}

// dig follows keys through nested YAML mappings; nil when one is missing.
func dig(v any, keys ...string) any {
	for _, k := range keys {
		m, _ := v.(map[string]any)
		v = m[k]
	}
	return v
}

// loadEach loads every element of list (a YAML sequence) into a new
// message and validates it.
func loadEach(t *testing.T, what string, list any, newMsg func() proto.Message) {
	t.Helper()
	items, ok := list.([]any)
	if !ok || len(items) == 0 {
		t.Errorf("%s: %s is not a non-empty list", envoyDoc, what)
		return
	}
	for i, item := range items {
		js, err := json.Marshal(item)
		if err != nil {
			t.Fatalf("%s: %s[%d]: %v", envoyDoc, what, i, err)
		}
		m := newMsg()
		if err := protojson.Unmarshal(js, m); err != nil {
			t.Errorf("%s: %s[%d] is not a valid %s: %v", envoyDoc, what, i, m.ProtoReflect().Descriptor().FullName(), err)
			continue
		}
		if err := validateDeep(m.ProtoReflect()); err != nil {
			t.Errorf("%s: %s[%d]: %v", envoyDoc, what, i, err)
		}
	}
}

// validateDeep runs the API's validation rules on m and on every message
// under it, unpacking google.protobuf.Any (the rules stop at an Any's type
// URL).
func validateDeep(m protoreflect.Message) error {
	if v, ok := m.Interface().(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			return err
		}
	}
	if a, ok := m.Interface().(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			return err
		}
		return validateDeep(inner.ProtoReflect())
	}
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := 0; i < v.List().Len() && err == nil; i++ {
				err = validateDeep(v.List().Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				err = validateDeep(mv.Message())
				return err == nil
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			err = validateDeep(v.Message())
		}
		if err != nil {
			err = fmt.Errorf("%s: %w", fd.Name(), err)
		}
		return err == nil
	})
	return err
}
