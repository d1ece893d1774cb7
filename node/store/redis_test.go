package store

import (
	"slices"
	"strings"
	"testing"
)

func TestParseRedisURL(t *testing.T) {
	f := func(raw string, addrs []string, user, pass, masterSet string, db int) {
		t.Helper()
		opt, err := ParseRedisURL(raw)
		if err != nil {
			t.Errorf("ParseRedisURL(%q): %v", raw, err)
			return
		}
		if !slices.Equal(opt.InitAddress, addrs) || opt.Username != user || opt.Password != pass ||
			opt.Sentinel.MasterSet != masterSet || opt.SelectDB != db {
			t.Errorf("ParseRedisURL(%q) = addrs %q user %q password %q master_set %q db %d; want %q %q %q %q %d",
				raw, opt.InitAddress, opt.Username, opt.Password, opt.Sentinel.MasterSet, opt.SelectDB, addrs, user, pass, masterSet, db)
		}
	}
	f("redis://127.0.0.1:6379", []string{"127.0.0.1:6379"}, "", "", "", 0)
	f("redis://localhost", []string{"localhost:6379"}, "", "", "", 0)
	f("redis://u:p@10.0.0.1:6380/2", []string{"10.0.0.1:6380"}, "u", "p", "", 2)
	f("rediss://u:p@redis.example:6380", []string{"redis.example:6380"}, "u", "p", "", 0)
	f("unix:///run/redis/redis.sock", []string{"/run/redis/redis.sock"}, "", "", "", 0)
	// Cluster seeds, comma-separated or in rueidis' ?addr= form.
	f("redis://a:7000,b:7001,c:7002", []string{"a:7000", "b:7001", "c:7002"}, "", "", "", 0)
	f("redis://u:p@a:7000,b:7001/0?client_name=rl", []string{"a:7000", "b:7001"}, "u", "p", "", 0)
	f("redis://a:7000?addr=b:7001&addr=c:7002", []string{"a:7000", "b:7001", "c:7002"}, "", "", "", 0)
	// A user name or password holding a host's text is left alone.
	f("redis://a:a@a:1,b:2", []string{"a:1", "b:2"}, "a", "a", "", 0)
	// Sentinel: the sentinels and the master set's name.
	f("redis://s1:26379,s2:26379,s3:26379?master_set=mymaster", []string{"s1:26379", "s2:26379", "s3:26379"}, "", "", "mymaster", 0)
	f("redis://:secret@s1:26379?master_set=rl&addr=s2:26379", []string{"s1:26379", "s2:26379"}, "", "secret", "rl", 0)

	bad := func(raw, wantErr string) {
		t.Helper()
		_, err := ParseRedisURL(raw)
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("ParseRedisURL(%q) = %v; want an error containing %q", raw, err, wantErr)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("ParseRedisURL(%q) error %q shows the password", raw, err)
		}
	}
	bad("http://a:1", "scheme")
	bad("127.0.0.1:6379", "scheme")
	bad("redis://a:1,,b:2", "empty host")
	bad("redis://u:hunter2@a:1,", "empty host")
	bad("redis://u:hunter2@a:1/x", "database")
	// dial_timeout is used (since 2026-12-05), so it is checked: a negative
	// one would fail every connect, NaN and junk are no durations.
	bad("redis://u:hunter2@a:1?dial_timeout=-1s", "dial_timeout must not be negative")
	bad("redis://a:1?dial_timeout=NaN", "dial timeout")
	bad("redis://a:1?dial_timeout=", "dial timeout")
	f("redis://a:1?dial_timeout=0", []string{"a:1"}, "", "", "", 0) // 0: the node's default
	f("redis://a:1?dial_timeout=8760h", []string{"a:1"}, "", "", "", 0)
}
