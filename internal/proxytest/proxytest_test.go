package proxytest

import (
	"os"
	"path/filepath"
	"testing"
)

func TestBlockAndReplace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "doc.md")
	doc := "# Doc\n\n```sh\nnot this\n```\n\n```nginx\nserver { listen 127.0.0.1:8080; }\nupstream a { server 127.0.0.1:8081; }\n```\n\n```nginx\nsecond\n```\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	got := Block(t, path, "nginx")
	want := "server { listen 127.0.0.1:8080; }\nupstream a { server 127.0.0.1:8081; }\n"
	if got != want {
		t.Fatalf("Block = %q; want %q", got, want)
	}
	if r := Replace(t, got, "127.0.0.1:8081", "127.0.0.1:1", "127.0.0.1:8080", "127.0.0.1:2"); r != "server { listen 127.0.0.1:2; }\nupstream a { server 127.0.0.1:1; }\n" {
		t.Errorf("Replace = %q", r)
	}
}
