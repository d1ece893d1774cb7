package config

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzDecode feeds arbitrary files to the loader: it returns an error or a
// value, never panics, and every error names the file.
func FuzzDecode(f *testing.F) {
	for _, p := range []string{"testdata/*.toml", "../config.toml", "../chaos/scenarios.toml"} {
		files, _ := filepath.Glob(p)
		for _, file := range files {
			data, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Add([]byte("[node]\ntimeout = \"-9223372036854775808ns\"\nport = 1e400\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var c testConfig
		if err := Decode("fuzz.toml", data, &c); err != nil && !containsFile(err.Error()) {
			t.Fatalf("error does not name the file: %v", err)
		}
	})
}

func containsFile(msg string) bool {
	for i := 0; i+len("fuzz.toml") <= len(msg); i++ {
		if msg[i:i+len("fuzz.toml")] == "fuzz.toml" {
			return true
		}
	}
	return false
}
