package config

import (
	"encoding/json"
	"fmt"
	"time"
)

// Duration is a time.Duration written as Go duration text ("250ms", "1m30s")
// in TOML and JSON, so a file says grace_period = "30s" rather than a count
// of nanoseconds.
type Duration struct{ time.Duration }

// UnmarshalText parses Go duration syntax.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := time.ParseDuration(string(text))
	if err != nil {
		return fmt.Errorf(`invalid duration %q: want a number with a unit, such as "250ms" or "1m30s"`, text)
	}
	d.Duration = v
	return nil
}

// MarshalText writes the form UnmarshalText reads.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// MarshalJSON writes the duration as a JSON string, "1m30s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a JSON string in Go duration syntax.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf(`invalid duration %s: want a string such as "250ms" or "1m30s"`, b)
	}
	return d.UnmarshalText([]byte(s))
}
